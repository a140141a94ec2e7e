"""Built-in model plugin: Conv2/4/6/8, CIFAR ResNet-18/34, WRN-28-k and any torchvision classifier."""
