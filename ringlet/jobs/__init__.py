"""Whole jobs from specs, as the command line runs them: a model spec (a zoo name, a checkpoint, a
saved model or ``module:factory``) and data in, a report out — ``ringlet infer`` (:mod:`~.infer`),
``train`` and ``eval`` (:mod:`~.train`), ``search`` and ``finetune`` (:mod:`~.search`). They sit
on top of the facade (:mod:`ringlet.sources`, :mod:`ringlet.private`); nothing below imports them.
"""
