"""``loce predict``: run a trained detector on images and write LVIS results (and pictures)."""

from __future__ import annotations

import argparse

HELP = "Run a trained detector on a folder of images or an annotated set; write LVIS results."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="a checkpoint written by `loce train`")
    parser.add_argument("--config", default=None,
                        help="config (default: the one stored in the checkpoint)")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", help="a folder of images (ids 1, 2, ... in file-name order)")
    src.add_argument("--gt", help="an LVIS/COCO annotation file whose images to run on")
    parser.add_argument("--image-root", default=None,
                        help="images folder for --gt (default: the config's data.val_images)")
    parser.add_argument("--out", required=True, help="results JSON to write (LVIS format)")
    parser.add_argument("--visualize", default=None, metavar="DIR",
                        help="also draw boxes, masks and class names on every image and write "
                        "the pictures here, under the input images' file names")
    parser.add_argument("--vis-threshold", type=float, default=0.3,
                        help="minimum score drawn by --visualize (default 0.3)")
    parser.add_argument("--no-masks", action="store_true", help="write boxes only")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set model.test.score_thresh=0.05")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from loce import build
    from loce.engine.distributed import select_device
    from loce.engine.evaluate import predict_to_file

    model, cfg, state = build.load_trained_model(args.checkpoint, args.overrides, args.config)
    cat_ids = state["category_ids"]
    names = state.get("category_names")
    device = select_device(args.device)
    model.to(device)

    transforms = build.build_test_transforms(cfg)
    if args.images is not None:
        from loce.engine.predict import ImageFolder

        dataset = ImageFolder(args.images, transforms, cat_ids)
    else:
        from loce.data.lvis import LVISDataset

        root = args.image_root or cfg.data.val_images
        dataset = LVISDataset(args.gt, root, train=False, transforms=transforms)
        build.check_category_table(dataset, cat_ids, args.gt)

    on_image = None
    if args.visualize is not None:
        from loce.engine.predict import draw_detections, save_picture

        vis_dir = Path(args.visualize)
        vis_dir.mkdir(parents=True, exist_ok=True)
        class_names = list(names) if names else [str(c) for c in cat_ids]

        def on_image(index, image, det):  # image: the resized model input (unused)
            original = dataset.load_image(index).permute(1, 2, 0).mul(255).round()
            picture = draw_detections(original.byte().numpy(), det, class_names,
                                      args.vis_threshold)
            save_picture(picture, vis_dir / dataset.image_path(index).name)

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    n = predict_to_file(model, dataset, args.out, device=device, with_masks=not args.no_masks,
                        workers=cfg.data.workers, on_image=on_image)
    print(f"wrote {n} detections for {len(dataset)} images to {args.out}")
    if args.visualize is not None:
        print(f"pictures in {args.visualize}")
    return 0
