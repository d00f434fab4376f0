#!/usr/bin/env python
"""Export a CleanAnchors / SWN checkpoint as a stock Detectron2 checkpoint.

    python tools/export_stock.py --config-file configs/TreeCrowns/swn_retinanet_mnv2_fpn.py \\
        --checkpoint output/demo/swn_retinanet_mnv2_fpn/model_final.pth --output export/swn_stock.pth [key=value ...]

Writes OUTPUT ({"model": weights}: the checkpoint's weights that the stock model has, loaded
strictly into it first; the SWN's own weights dropped and listed, no optimizer state) and
OUTPUT's name with .yaml: the config with each method class replaced by the Detectron2 class it
derives from (SWNRetinaNet, CleanAnchorsRetinaNet → RetinaNet, ...), without the method's
arguments, and train.init_checkpoint=OUTPUT. Evaluate it with
`train_net.py --config-file OUTPUT.yaml --eval-only`, or trace / export it as any stock model
(Detectron2's tools/deploy/export_model.py). See detkit/export.py.
"""
import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, help="the checkpoint's LazyConfig (.py or a run's config.yaml)")
    parser.add_argument("--checkpoint", required=True, help="a train_net.py checkpoint (.pth)")
    parser.add_argument("--output", required=True, help="the stock checkpoint to write (.pth); the config goes next to it")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="key=value overrides of --config-file")
    args = parser.parse_args(argv)

    from detkit.engine import ConfigError, load_checked_config
    from detkit.export import ExportError, export_stock_checkpoint

    try:
        cfg = load_checked_config(args.config_file, args.opts, train=False, check_data=False)
        result = export_stock_checkpoint(cfg, args.checkpoint, args.output)
    except (ConfigError, ExportError) as e:
        print(f"export_stock.py: error: {e}", file=sys.stderr)
        return 2
    for line in result["changes"]:
        print(f"config: {line}")
    dropped = result["dropped"]
    print(f"dropped {len(dropped)} method-only weights" + (f" ({dropped[0]}, ...)" if dropped else ""))
    print(f"wrote {result['output']} ({type(result['stock_model']).__name__}, loaded strictly) and {result['config']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
