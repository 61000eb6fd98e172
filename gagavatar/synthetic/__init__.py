"""Synthetic data: a FLAME-layout head model (``head``) and talking-head videos made from it."""
