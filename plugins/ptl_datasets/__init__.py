"""Built-in dataset plugin: the bundled Fashion-MNIST pack, torchvision datasets, image folders."""
