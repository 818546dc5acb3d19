"""Export of trained detectors to ONNX (:func:`loce.export.onnx.export_onnx`)."""
