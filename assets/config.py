"""Run config of every stage, declared once: a ``dg.Config`` is derived from the stage's settings
model in ml/ (``ml/settings.py``, ``ml/train/config.py``) with ``dagster_config``
(resources/dagster_config.py; TorchDevice uses it too), so a field, its default and its description
live in one place and the validators stay on the ml/ model.

``SplitConfig`` carries the document split (``seed``, ``val_ratio``, ``test_ratio``) every corpus
and dataset stage shares: declared once (``ml.settings.SplitRules``), and checked equal across
stages before any step runs (``ml.settings.validate_profile``).
"""

from ml.settings import RelationTriplesRules, SplitRules
from resources.dagster_config import dagster_config

__all__ = ["MixedSplitConfig", "RelationTriplesConfig", "SplitConfig", "dagster_config"]


SplitConfig = dagster_config(SplitRules, "SplitConfig", only=("seed", "val_ratio", "test_ratio"))
"""The document split shared by tokenizer, tokenized_corpus and every dataset."""
MixedSplitConfig = dagster_config(SplitRules, "MixedSplitConfig", only=("mix_weights",), base=SplitConfig)
"""The split plus ``mix_weights`` (source -> weight of the train split), for the stages that mix sources."""
RelationTriplesConfig = dagster_config(RelationTriplesRules, "RelationTriplesConfig")
