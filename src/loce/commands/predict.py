"""``loce predict``: run a trained detector on images and write LVIS results (and pictures)."""

from __future__ import annotations

import argparse

from loce.commands._args import add_amp, add_device, add_overrides, amp_overrides

HELP = "Run a trained detector on a folder of images or an annotated set; write LVIS results."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--checkpoint",
                       help="a checkpoint written by `loce train` or `loce convert`")
    model.add_argument("--onnx", metavar="MODEL.onnx",
                       help="a file written by `loce export`, run by onnxruntime on the CPU "
                            "(its own test settings; --config, --set, --amp do not apply)")
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
    parser.add_argument("--dets-per-class", type=int, default=None, metavar="K",
                        help="keep each class's K best detections over the dataset (a per-class "
                        "top-k across images, for `loce eval --protocol fixed/pooled`: K=10000; "
                        "raise --set model.test.detections_per_img to keep more per image)")
    add_device(parser)
    add_amp(parser)
    add_overrides(parser, "override a config value, e.g. --set model.test.score_thresh=0.05")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from loce import build
    from loce.engine.checkpoint import check_category_table
    from loce.engine.evaluate import predict_to_file
    from loce.errors import ConfigError
    from loce.fileio import check_output_file, ensure_directory
    from loce.inference import Detector

    if args.dets_per_class is not None and args.dets_per_class < 1:
        raise ConfigError(f"--dets-per-class must be >= 1, got {args.dets_per_class}")

    # Output paths are checked before any work; the results file replaces --out only when
    # every image went through (a failure leaves an existing file untouched).
    check_output_file(args.out, what="results file")
    if args.visualize is not None:
        ensure_directory(args.visualize, what="--visualize folder")
    if args.onnx is not None:
        if args.config is not None or args.overrides or args.amp is not None:
            raise ConfigError("--config, --set and --amp apply to --checkpoint; an ONNX file "
                              "keeps the settings it was exported with (re-export to change them)")
        det = Detector.from_onnx(args.onnx)
        if args.no_masks:
            det.with_masks = False
    else:
        det = Detector.from_checkpoint(args.checkpoint, device=args.device,
                                       with_masks=not args.no_masks,
                                       overrides=[*amp_overrides(args), *args.overrides],
                                       config=args.config)
    cat_ids, cfg = det.category_ids, det.cfg
    if args.images is not None:
        from loce.engine.predict import ImageFolder

        dataset = ImageFolder(args.images, det.transforms, cat_ids, decoder=det.decoder)
    else:
        from loce.data.lvis.dataset import LVISDataset

        if args.image_root is None and cfg is None:
            raise ConfigError("--gt with --onnx needs --image-root (an ONNX file stores no "
                              "data paths)")
        root = args.image_root or cfg.data.val_images
        dataset = LVISDataset(args.gt, root, train=False, with_masks=False, transforms=det.transforms,
                              decoder=det.decoder)
        check_category_table(dataset, cat_ids, args.gt)

    on_image = None
    if args.visualize is not None:
        vis_dir = Path(args.visualize)

        def on_image(index, image, result):  # image: the resized model input (unused)
            original = dataset.load_image(index)
            det.draw(result, original, vis_dir / dataset.image_path(index).name,
                     score_threshold=args.vis_threshold)

    n = predict_to_file(det.model, dataset, args.out, device=det.device,
                        with_masks=det.with_masks,
                        workers=build.data_workers(cfg) if cfg is not None else 0,
                        batch_size=cfg.eval.images_per_gpu if cfg is not None else 1,
                        on_image=on_image, forward=det.detect_batch)
    if args.dets_per_class is not None:
        from loce.evaluation.results_file import cap_results_file_per_class

        n, total = cap_results_file_per_class(args.out, args.out, args.dets_per_class)
        print(f"kept the top {args.dets_per_class} detections per class: {n} of {total}")
    print(f"wrote {n} detections for {len(dataset)} images to {args.out}")
    if args.visualize is not None:
        print(f"pictures in {args.visualize}")
    return 0
