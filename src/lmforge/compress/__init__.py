"""Compression: quantisation, distillation and pruning, each a configuration of the one trainer.

Every variant is a model folder the bundle loader rebuilds (`model/quantized.py` holds what a
loader must reconstruct), its manifest naming the parent model.
"""
