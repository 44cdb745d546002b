"""The networks of kdseg's scripts/kd/models/papers.lua in PyTorch, layer for
layer and name for name, so that kdseg's weights load into them with
load_state_dict(strict=True) and give the same outputs (checked by
tests/fixtures/torch/make_fixture.py against kdseg's forward).

    net = build("deeplabv3plus_resnet50", classes=19, output_stride=16)

Backbones carry torchvision's names (conv1, bn1, layer1.0.conv1, ...;
features.0.0, features.1.conv.0.0, ... for MobileNetV2), so torchvision's
ImageNet weights load into net.backbone (without fc.*, or without
features.18.* and classifier.* for MobileNetV2).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


def conv(cin, cout, k, stride=1, dilation=1):
    return nn.Conv2d(cin, cout, k, stride=stride, padding=dilation if k == 3 else 0, dilation=dilation, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin, planes, stride, dilation, downsample):
        super().__init__()
        self.conv1, self.bn1 = conv(cin, planes, 3, stride, dilation), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = conv(planes, planes, 3, 1, dilation), nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (self.downsample(x) if self.downsample is not None else x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, planes, stride, dilation, downsample):
        super().__init__()
        self.conv1, self.bn1 = conv(cin, planes, 1), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = conv(planes, planes, 3, stride, dilation), nn.BatchNorm2d(planes)
        self.conv3, self.bn3 = conv(planes, planes * 4, 1), nn.BatchNorm2d(planes * 4)
        self.downsample = downsample

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (self.downsample(x) if self.downsample is not None else x))


DEPTHS = {18: (BasicBlock, [2, 2, 2, 2]), 34: (BasicBlock, [3, 4, 6, 3]),
          50: (Bottleneck, [3, 4, 6, 3]), 101: (Bottleneck, [3, 4, 23, 3])}
DILATE_AT = {8: [False, True, True], 16: [False, False, True], 32: [False, False, False]}


class ResNet(nn.Module):
    def __init__(self, depth, output_stride=8, deep_stem=False, width=64):
        super().__init__()
        block, counts = DEPTHS[depth]
        w = width
        self.deep_stem = deep_stem
        if deep_stem:
            self.conv1, self.bn1 = conv(3, w, 3, 2), nn.BatchNorm2d(w)
            self.conv2, self.bn2 = conv(w, w, 3), nn.BatchNorm2d(w)
            self.conv3, self.bn3 = conv(w, 2 * w, 3), nn.BatchNorm2d(2 * w)
            cin = 2 * w
        else:
            self.conv1, self.bn1 = nn.Conv2d(3, w, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(w)
            cin = w
        dilation = 1
        for i, count in enumerate(counts):
            planes, stride = w * 2 ** i, 1 if i == 0 else 2
            previous = dilation
            if i > 0 and DILATE_AT[output_stride][i - 1]:
                dilation, stride = dilation * stride, 1
            downsample = None
            if stride != 1 or cin != planes * block.expansion:
                downsample = nn.Sequential(conv(cin, planes * block.expansion, 1, stride),
                                           nn.BatchNorm2d(planes * block.expansion))
            blocks = [block(cin, planes, stride, previous, downsample)]
            cin = planes * block.expansion
            blocks += [block(cin, planes, 1, dilation, None) for _ in range(1, count)]
            setattr(self, "layer%d" % (i + 1), nn.Sequential(*blocks))
        self.channels = {"c1": w * block.expansion, "c4": cin}

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        if self.deep_stem:
            y = F.relu(self.bn2(self.conv2(y)))
            y = F.relu(self.bn3(self.conv3(y)))
        y = F.max_pool2d(y, 3, 2, 1)
        c1 = self.layer1(y)
        c3 = self.layer3(self.layer2(c1))
        return {"c1": c1, "c3": c3, "c4": self.layer4(c3)}


def make_divisible(v):
    new = max(8, int(v + 4) // 8 * 8)
    return new + 8 if new < 0.9 * v else new


def conv_bn_relu6(cin, cout, k, stride=1, dilation=1, groups=1):
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, dilation if k == 3 else 0, dilation, groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6())


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, dilation, expand):
        super().__init__()
        hidden = int(round(cin * expand))
        self.residual = stride == 1 and cin == cout
        layers = [conv_bn_relu6(cin, hidden, 1)] if expand != 1 else []
        layers += [conv_bn_relu6(hidden, hidden, 3, stride, dilation, hidden),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(nn.Module):
    SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1)]

    def __init__(self, output_stride=16, width=32):
        super().__init__()
        mult = width / 32
        cin = make_divisible(32 * mult)
        layers = [conv_bn_relu6(3, cin, 3, 2)]
        so_far, dilation = 2, 1
        for t, c, n, s in self.SETTINGS:
            c = make_divisible(c * mult)
            previous, stride = dilation, s
            if s > 1 and so_far >= output_stride:
                dilation, stride = dilation * s, 1
            else:
                so_far *= s
            for i in range(n):
                layers.append(InvertedResidual(cin, c, stride if i == 0 else 1, previous if i == 0 else dilation, t))
                cin = c
        self.features = nn.Sequential(*layers)
        self.channels = {"c1": make_divisible(24 * mult), "c4": cin}

    def forward(self, x):
        c1 = None
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i == 3:
                c1 = x
        return {"c1": c1, "c4": x}


def cbr(cin, cout, k, dilation=1):
    return nn.Sequential(conv(cin, cout, k, 1, dilation), nn.BatchNorm2d(cout), nn.ReLU())


class ASPP(nn.Module):
    def __init__(self, cin, cout, rates):
        super().__init__()
        convs = [cbr(cin, cout, 1)] + [cbr(cin, cout, 3, r) for r in rates]
        convs.append(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1, bias=False),
                                   nn.BatchNorm2d(cout), nn.ReLU()))
        self.convs = nn.Sequential(*convs)
        self.project = cbr(cout * len(convs), cout, 1)

    def forward(self, x):
        outs = [c(x) for c in list(self.convs)[:-1]]
        outs.append(F.interpolate(self.convs[-1](x), size=x.shape[2:], mode="bilinear", align_corners=False))
        return self.project(torch.cat(outs, 1))


ASPP_RATES = {8: [12, 24, 36], 16: [6, 12, 18], 32: [3, 6, 9]}


class DeepLabV3PlusHead(nn.Module):
    def __init__(self, c1, c4, classes, output_stride, aspp=256, low=48):
        super().__init__()
        self.aspp = ASPP(c4, aspp, ASPP_RATES[output_stride])
        self.reduce = cbr(c1, low, 1)
        self.fuse = nn.Sequential(cbr(aspp + low, aspp, 3), cbr(aspp, aspp, 3))
        self.classifier = nn.Conv2d(aspp, classes, 1)

    def forward(self, f):
        high = self.aspp(f["c4"])
        up = F.interpolate(high, size=f["c1"].shape[2:], mode="bilinear", align_corners=False)
        return self.classifier(self.fuse(torch.cat([up, self.reduce(f["c1"])], 1)))


class PPM(nn.Module):
    def __init__(self, cin, reduction, bins):
        super().__init__()
        self.features = nn.Sequential(*[nn.Sequential(nn.AdaptiveAvgPool2d(b), nn.Conv2d(cin, reduction, 1, bias=False),
                                                      nn.BatchNorm2d(reduction), nn.ReLU()) for b in bins])

    def forward(self, x):
        return torch.cat([x] + [F.interpolate(f(x), size=x.shape[2:], mode="bilinear", align_corners=True)
                                for f in self.features], 1)


class PSPHead(nn.Module):
    BINS = (1, 2, 3, 6)

    def __init__(self, c4, classes, channels=512):
        super().__init__()
        self.ppm = PPM(c4, c4 // len(self.BINS), self.BINS)
        self.cls = nn.Sequential(nn.Conv2d(2 * c4, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
                                 nn.ReLU(), nn.Dropout2d(0.1), nn.Conv2d(channels, classes, 1))

    def forward(self, f):
        return self.cls(self.ppm(f["c4"]))


class Segmenter(nn.Module):
    def __init__(self, backbone, head, align_corners):
        super().__init__()
        self.backbone, self.head, self.align_corners = backbone, head, align_corners

    def forward(self, x):
        return F.interpolate(self.head(self.backbone(x)), size=x.shape[2:], mode="bilinear",
                             align_corners=self.align_corners)


def build(name, classes=19, output_stride=None, deep_stem=0, width=None):
    """The network kdseg's kd.models.create(name, options) builds, with the
    same option names and defaults."""
    if name == "deeplabv3plus_mobilenetv2":
        os_ = output_stride or 16
        backbone = MobileNetV2(os_, width or 32)
        s = (width or 32) / 32
        head = DeepLabV3PlusHead(backbone.channels["c1"], backbone.channels["c4"], classes, os_,
                                 max(8, int(256 * s)), max(4, int(48 * s)))
        return Segmenter(backbone, head, False)
    family, _, depth = name.partition("_resnet")
    if family not in ("pspnet", "deeplabv3plus") or not depth.isdigit() or int(depth) not in (18, 50, 101):
        raise ValueError("unknown model %r" % name)
    os_ = output_stride or (8 if family == "pspnet" else 16)
    backbone = ResNet(int(depth), os_, bool(deep_stem), width or 64)
    s = (width or 64) / 64
    if family == "pspnet":
        return Segmenter(backbone, PSPHead(backbone.channels["c4"], classes, max(8, int(512 * s))), True)
    head = DeepLabV3PlusHead(backbone.channels["c1"], backbone.channels["c4"], classes, os_,
                             max(8, int(256 * s)), max(4, int(48 * s)))
    return Segmenter(backbone, head, False)


NAMES = ["pspnet_resnet18", "pspnet_resnet50", "pspnet_resnet101", "deeplabv3plus_resnet18",
         "deeplabv3plus_resnet50", "deeplabv3plus_resnet101", "deeplabv3plus_mobilenetv2"]
