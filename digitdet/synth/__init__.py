"""The house-number renderer: synthetic photos with exact digit boxes (``digitdet synth``)."""
