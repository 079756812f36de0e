"""train()'s garbage-collector set-up around fit (vae_lab.cli.train.setup_frozen_for_gc), without training."""

import pytest


def test_objects_made_before_fit_are_out_of_the_gcs_sight_during_fit_only():
    """train() runs fit inside setup_frozen_for_gc: what existed before is frozen, garbage cycles made during fit are
    still collected, and everything is given back to the collector afterwards, also after an error."""
    import gc
    import weakref

    from vae_lab.cli.train import setup_frozen_for_gc

    class Node:
        pass

    assert gc.get_freeze_count() == 0
    with setup_frozen_for_gc():
        assert gc.get_freeze_count() > 1000  # at least pytest's, torch's and vae_lab's objects
        node = Node()
        node.itself = node  # a cycle: only the cyclic collector frees it
        alive = weakref.ref(node)
        del node
        gc.collect()
        assert alive() is None
    assert gc.get_freeze_count() == 0
    with pytest.raises(RuntimeError, match="fit failed"):
        with setup_frozen_for_gc():
            raise RuntimeError("fit failed")
    assert gc.get_freeze_count() == 0
