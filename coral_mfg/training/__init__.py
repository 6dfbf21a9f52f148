"""Teaching the inspection a new product: a grade classifier trained from harvested crops.

Only ``coral-mfg train-classifier`` imports this package; TensorFlow is an
optional extra (``coral-mfg[train]``) that inspection never needs.
"""
