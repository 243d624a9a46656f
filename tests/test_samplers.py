import numpy as np
import pytest

from distilshot.train.samplers import ClassBalancedBatchSampler, EpisodeSampler, RandomBatchSampler

LABELS = np.repeat(np.arange(10), 8)


def test_episodes_have_the_requested_shape_and_disjoint_sets() -> None:
    sampler = EpisodeSampler(LABELS, n_way=5, k_shot=2, n_query=3, episodes=20, seed=0)
    for episode in sampler:
        assert episode.support.shape == (5, 2) and episode.query.shape == (5, 3)
        assert len(set(episode.classes)) == 5
        for i, c in enumerate(episode.classes):
            assert (LABELS[episode.support[i]] == c).all() and (LABELS[episode.query[i]] == c).all()
        assert not set(episode.support.ravel()) & set(episode.query.ravel())
        assert episode.indices.tolist() == episode.support.ravel().tolist() + episode.query.ravel().tolist()


def test_episodes_are_reproducible_per_epoch_and_differ_between_epochs() -> None:
    a = EpisodeSampler(LABELS, 5, 1, 2, 5, seed=3)
    b = EpisodeSampler(LABELS, 5, 1, 2, 5, seed=3)
    first = [e.indices.tolist() for e in a]
    assert first == [e.indices.tolist() for e in b]
    a.set_epoch(1)
    assert first != [e.indices.tolist() for e in a]


def test_episode_sampler_refuses_impossible_episodes() -> None:
    with pytest.raises(ValueError, match="need 11 classes"):
        EpisodeSampler(LABELS, 11, 1, 1, 1, seed=0)
    with pytest.raises(ValueError, match="at least 9 images"):
        EpisodeSampler(LABELS, 5, 4, 5, 1, seed=0)


def test_class_balanced_batches() -> None:
    sampler = ClassBalancedBatchSampler(LABELS, classes_per_batch=4, per_class=3, batches=7, seed=0)
    batches = list(sampler)
    assert len(batches) == 7
    for batch in batches:
        counts = np.bincount(LABELS[batch], minlength=10)
        assert sorted(counts[counts > 0].tolist()) == [3, 3, 3, 3]


def test_random_batches_cover_the_set_once_per_epoch() -> None:
    sampler = RandomBatchSampler(size=80, batch_size=16, seed=0)
    seen = np.concatenate(list(sampler))
    assert len(sampler) == 5 and sorted(seen.tolist()) == list(range(80))
    longer = RandomBatchSampler(size=80, batch_size=16, seed=0, batches=12)
    assert len(np.concatenate(list(longer))) == 192
