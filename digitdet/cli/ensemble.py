"""digitdet ensemble: fuse several pred.json files of one image folder into one submission."""
from __future__ import annotations

import json

from digitdet.read.ensemble import NUMBER_FUSIONS, ensemble_files
from digitdet.read.fusion import CONF_TYPES, METHODS


def add_parser(sub, name):
    p = sub.add_parser(name, description="Fuse the pred.json files of several models (same image folder) with "
                                   "ensemble-boxes; read each image's number with --number-fusion.")
    p.add_argument("preds", nargs="+", metavar="PRED_JSON", help="members' pred.json files")
    p.add_argument("--images", required=True, help="the folder the predictions are for (image sizes)")
    p.add_argument("--out", required=True, help="output folder for pred.json and pred.csv")
    p.add_argument("--member-weights", "--weights", dest="weights", type=float, nargs="+",
                   help="one weight per member (default: equal); not checkpoints, which --weights names elsewhere")
    p.add_argument("--method", choices=METHODS, default="wbf", help="box fusion (default: wbf)")
    p.add_argument("--iou", type=float, default=0.55, help="IoU at which boxes of one digit match (default 0.55)")
    p.add_argument("--skip-box-thr", type=float, default=0.0, help="ignore member boxes scoring below this")
    p.add_argument("--conf-type", choices=CONF_TYPES, default="avg",
                   help="WBF fused score: avg (default) scales the mean score by the share of weight "
                        "that found the box")
    p.add_argument("--number-fusion", choices=NUMBER_FUSIONS, default="vote",
                   help="vote (default): weighted vote over the members' own numbers, ties -> boxes; "
                        "boxes: read the fused boxes that a weighted majority of members found")
    p.add_argument("--decode-score-thresh", "--decode-thresh", dest="decode_thresh", type=float, default=None,
                   help="score a box needs to count as a read digit, members and fused boxes alike (plain "
                        "reading); default: each member reads as its `digitdet predict` did (the "
                        "pred_config.json beside its pred.json: tuned threshold, line reading), else 0.5")
    p.add_argument("--min-agreement", type=float, default=0.5,
                   help="boxes mode: a fused digit is read when members holding MORE than this share "
                        "of the weight found it (default 0.5, a majority)")
    p.add_argument("--max-dets", type=int, default=100, help="fused boxes kept per image in pred.json")
    return p


def run(args) -> int:
    summary = ensemble_files(args.preds, args.images, args.out, weights=args.weights, method=args.method,
                             iou=args.iou, skip_box_thr=args.skip_box_thr, conf_type=args.conf_type,
                             number_fusion=args.number_fusion, decode_thresh=args.decode_thresh,
                             min_agreement=args.min_agreement, max_dets=args.max_dets)
    print(json.dumps(summary))
    return 0
