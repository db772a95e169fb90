"""Experiments: multi-seed loss comparisons (``compare``), their statistics (``stats``,
``summary``), reports (``report``), figures (``plots``, ``detections``, ``loss_shapes``), the
paper-replication preset (``presets``) and the main job (``demo``). Modules are imported on use,
so importing this package stays cheap."""
