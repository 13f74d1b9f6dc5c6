"""Helpers for the synthetic datasets' tests: is a class told by texture, or by mean colour alone?"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def mean_colour_accuracy(train_x, train_y, test_x, test_y) -> float:
    """Best of nearest class centroid and multinomial logistic regression on per-image mean RGB."""
    num_classes = int(train_y.max()) + 1
    f_train, f_test = train_x.mean((2, 3)), test_x.mean((2, 3))
    centroids = torch.stack([f_train[train_y == c].mean(0) for c in range(num_classes)])
    centroid_acc = (torch.cdist(f_test, centroids).argmin(1) == test_y).float().mean().item()
    mu, sd = f_train.mean(0), f_train.std(0)
    linear = nn.Linear(3, num_classes)
    optimizer = torch.optim.LBFGS(linear.parameters(), max_iter=500)

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(linear((f_train - mu) / sd), train_y)
        loss.backward()
        return loss

    optimizer.step(closure)
    logistic_acc = (linear((f_test - mu) / sd).argmax(1) == test_y).float().mean().item()
    return max(centroid_acc, logistic_acc)


def small_cnn_accuracy(train_x, train_y, test_x, test_y, epochs=12) -> float:
    """Test accuracy of a 4-layer strided CNN trained briefly with Adam (seconds on a CPU)."""

    def block(i, o):  # batch statistics only: running averages lag behind at this few steps
        return nn.Sequential(
            nn.Conv2d(i, o, 3, 2, 1, bias=False), nn.BatchNorm2d(o, track_running_stats=False), nn.ReLU()
        )

    net = nn.Sequential(
        block(3, 24),
        block(24, 32),
        block(32, 48),
        block(48, 64),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, int(train_y.max()) + 1),
    )
    optimizer = torch.optim.Adam(net.parameters(), 3e-3)
    for _ in range(epochs):
        for batch in torch.randperm(len(train_x)).split(32):
            loss = F.cross_entropy(net(train_x[batch]), train_y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        return (net(test_x).argmax(1) == test_y).float().mean().item()
