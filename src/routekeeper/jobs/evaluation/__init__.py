"""The ``evaluation`` job kind: its params and dataset (``dataset``), the metrics of a run
(``metrics``) and the kind itself (``kind.EvaluationKind``)."""
