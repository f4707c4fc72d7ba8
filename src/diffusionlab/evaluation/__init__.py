"""Measuring generative models: sample checks now; FID/KID/precision-recall and bits/dim build on this package."""
