"""lmms-eval entry point: ``[project.entry-points."lmms_eval.models"] vtc = "vtc.eval.plugin:manifest"``.

Kept import-light: lmms-eval loads every entry point when it starts; the model class is imported
only when ``--model vtc`` is asked for.
"""

from __future__ import annotations


def manifest():
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(
        model_id="vtc",
        simple_class_path="vtc.eval.lmms_model.VtcModel",
        aliases=("vtc_llava_onevision",),
    )
