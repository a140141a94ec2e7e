"""Data plumbing shared by every workflow: dataset containers, splits, samplers, augmentation."""
