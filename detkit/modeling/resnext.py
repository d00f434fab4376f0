from typing import List

from detectron2.modeling.backbone import BottleneckBlock, ResNet


def make_resnext_stages(
    depth: int = 101,
    num_groups: int = 32,
    width_per_group: int = 8,
    stride_in_1x1: bool = False,
    norm: str = "FrozenBN",
) -> List[list]:
    """The four stages of a ResNeXt (e.g. X-101-32x8d) for Detectron2's ``ResNet``.

    ``ResNet.make_default_stages`` fixes the bottleneck width at out_channels / 4 (plain ResNet);
    a ResNeXt's stage i has ``num_groups * width_per_group * 2**i`` bottleneck channels, as
    Detectron2's yacs ``build_resnet_backbone`` computes it.
    """
    num_blocks = {50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}[depth]
    in_channels, out_channels = [64, 256, 512, 1024], [256, 512, 1024, 2048]
    bottleneck = num_groups * width_per_group
    stages = []
    for i, (n, c_in, c_out) in enumerate(zip(num_blocks, in_channels, out_channels)):
        stages.append(
            ResNet.make_stage(
                block_class=BottleneckBlock,
                num_blocks=n,
                stride_per_block=[1 if i == 0 else 2] + [1] * (n - 1),
                in_channels=c_in,
                out_channels=c_out,
                bottleneck_channels=bottleneck * 2**i,
                num_groups=num_groups,
                stride_in_1x1=stride_in_1x1,
                norm=norm,
            )
        )
    return stages
