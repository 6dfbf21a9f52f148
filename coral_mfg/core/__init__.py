"""The bottom layer: the typed values every stage passes (frames, detections, results,
events), errors, geometry, files and the clock. It imports nothing else of the project."""
