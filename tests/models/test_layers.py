import torch
from torch import nn

from breastcad.models.layers import BatchNormChannelsLast, Conv1dChannelsLast, Dropout


def test_channels_last_conv_equals_conv1d():
    torch.manual_seed(0)
    conv = nn.Conv1d(3, 5, kernel_size=2)
    ours = Conv1dChannelsLast(3, 5, 2)
    # nn.Conv1d weight (out, in, k) -> stacked windows [x_t, x_t+1] per input channel block
    ours.linear.weight.data = conv.weight.data.permute(0, 2, 1).reshape(5, 6)
    ours.linear.bias.data = conv.bias.data.clone()
    x = torch.randn(4, 7, 3)  # (batch, steps, channels)
    expected = conv(x.transpose(1, 2)).transpose(1, 2)
    torch.testing.assert_close(ours(x), expected)


def test_channels_last_batchnorm_equals_batchnorm1d():
    torch.manual_seed(0)
    x = torch.randn(8, 6, 4)
    ref, ours = nn.BatchNorm1d(4), BatchNormChannelsLast(4)
    torch.testing.assert_close(ours(x), ref(x.transpose(1, 2)).transpose(1, 2))
    torch.testing.assert_close(ours.running_mean, ref.running_mean)
    torch.testing.assert_close(ours.running_var, ref.running_var)


def test_dropout_drops_and_rescales_in_training_only():
    torch.manual_seed(0)
    drop = Dropout(0.5)
    x = torch.ones(200_000)
    out = drop(x)
    assert abs((out == 0).float().mean().item() - 0.5) < 0.01
    assert abs(out.mean().item() - 1.0) < 0.01  # inverted dropout keeps the expectation
    drop.eval()
    assert torch.equal(drop(x), x)
