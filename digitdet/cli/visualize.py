"""digitdet visualize: draw a pred.json's boxes, digits, scores and numbers on the images."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from digitdet.config import Config
from digitdet.data.coco import load_coco_digits
from digitdet.io import read_pred_json
from digitdet.read.decode import group_by_image
from digitdet.read.submission import decoder_of_predictions
from digitdet.score.diagnostics import worst_number_errors
from digitdet.score.metrics import ERROR_KINDS
from digitdet.viz.report import write_prediction_pictures


def add_parser(sub, name):
    p = sub.add_parser(name, description="Draw the boxes read (score >= --decode-score-thresh), their digits and scores, "
                                   "and the number read on each image; the truth beside it in green with --gt.")
    p.add_argument("--pred", required=True, help="pred.json (COCO results)")
    p.add_argument("--images", required=True,
                   help="folder of images named <image_id>.png (other names: numbered as predict numbers them)")
    p.add_argument("--gt", help="COCO annotation file of these images (drawn beside the predictions)")
    p.add_argument("--n", type=int, default=36, help="number of images drawn (a seeded sample; default 36)")
    p.add_argument("--seed", type=int, default=0, help="which sample of images")
    p.add_argument("--decode-score-thresh", "--decode-thresh", dest="decode_thresh", type=float,
                   help="score a box needs to be read and drawn; default: the threshold `digitdet predict` read "
                        "pred.csv with (its pred_config.json beside pred.json), else 0.5")
    p.add_argument("--decode-iou", type=float,
                   help="duplicate suppression IoU when reading; default: as predict used, else 0.5")
    p.add_argument("--decode-line", type=float,
                   help="line reading threshold (0 = off); default: as predict used, else 0")
    p.add_argument("--errors", nargs="*", choices=[k for k in ERROR_KINDS if k != "correct"], metavar="KIND",
                   help="with --gt: draw only numbers read wrong, of these kinds if given (%s)"
                        % ", ".join(k for k in ERROR_KINDS if k != "correct"))
    p.add_argument("--out", required=True, help="output folder")
    return p


def run(args) -> int:
    dets = group_by_image(read_pred_json(args.pred))
    gt = load_coco_digits(args.gt, args.images)[0] if args.gt else None
    # the captions read numbers as pred.csv did, unless told otherwise
    used = {**Config().decoder(), **(decoder_of_predictions(args.pred) or {})}
    thresh = args.decode_thresh if args.decode_thresh is not None else used["score_thresh"]
    iou = args.decode_iou if args.decode_iou is not None else used["iou_thresh"]
    line = args.decode_line if args.decode_line is not None else used["line_thresh"]
    only, errors = None, None
    if args.errors is not None:
        if gt is None:
            raise ValueError("--errors needs --gt (the truth to compare the numbers read with)")
        wrong = worst_number_errors(dets, gt, thresh, iou, n=len(gt["images"]), line_thresh=line,
                                    line_start_side=used["line_start_side"])
        errors = dict(Counter(e["kind"] for e in wrong))
        only = {e["image_id"] for e in wrong if not args.errors or e["kind"] in args.errors}
        if not only:
            print(json.dumps({"images": 0, "errors": errors, "decode_thresh": thresh, "decode_iou": iou,
                              "decode_line": line}))
            return 0
    paths = write_prediction_pictures(dets, args.images, args.out, gt, args.n, thresh, iou, args.seed, only, line,
                                      used["line_start_side"])
    print(json.dumps({"grid": str(paths[0]), "images": len(paths) - 1, "out": str(Path(args.out)),
                      "decode_thresh": thresh, "decode_iou": iou, "decode_line": line,
                      **({"errors": errors} if errors is not None else {})}))
    return 0
