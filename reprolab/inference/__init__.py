"""Taking a trained model into use: the one prediction path, batch prediction over files, the MLflow
model, ONNX export and the comparison of its backends with torch."""
