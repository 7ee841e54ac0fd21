"""Truth against predictions: COCO mAP, number accuracy, error kinds, diagnostics."""
