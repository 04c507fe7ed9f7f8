"""The name under which models logged before the subpackages (reprolab.inference.serving) find their
pyfunc class: their pickle refers to `reprolab.serving.ReprolabClassifier`. A fresh process serving such
a model imports the flat package the model carries; a process that has imported this package already
(a notebook, a batch job) finds the class here instead, and scores the old model with today's code."""

from reprolab.inference.serving import ReprolabClassifier

__all__ = ["ReprolabClassifier"]
