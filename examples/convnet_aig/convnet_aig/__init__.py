"""A ConvNet-AIG-style gated ResNet in plain PyTorch (``convnet_aig.models``) and its RouteScope plug-in declaration
(``convnet_aig.plugin``)."""
