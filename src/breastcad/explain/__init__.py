"""Explanations: Grad-CAM for every image network, the IDC slide heatmap."""
