"""A feature generator meta-trained by progressive knowledge distillation ("Generative modeling through
knowledge distillation for few-shot learning", ICLR 2020 submission, sections 3-4).

Everything here works in the feature space of a frozen embedder: G(x, z, q) turns a real feature x of a
class, Gaussian noise z and the mean q of the class's available examples into a new feature of that
class. In each meta-training episode the student, a cosine prototype classifier, is built from k_train
real examples per class plus generated ones; the teacher is the same classifier built from k_teacher real
examples; the loss on the episode's queries is Eq. 1. "Weakening the student" lowers k_train from k_max
to 1 on a log scale; "strengthening the teacher" raises k_teacher from k_train to k_max; an ensemble
trains several generators, each with its own teacher set, and averages their students' predictions.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import Progress
from torch import nn

from distilshot.errors import ConfigError
from distilshot.train.evaluation import EvalResult
from distilshot.train.samplers import EpisodeSampler

SCHEDULES = ("weaken-student", "strengthen-teacher", "plain", "no-distillation")


class FeatureGenerator(nn.Module):
    """G(x, z, q) = x + MLP([x, z, q]): a real feature of the class moved by an offset computed from it,
    noise and the class mean. The last layer starts at zero, so an untrained generator copies real
    examples, i.e. starts exactly at the plain prototype classifier and can only be trained away from it."""

    def __init__(self, dim: int, noise_dim: int, hidden: int) -> None:
        super().__init__()
        self.dim, self.noise_dim = dim, noise_dim
        self.net = nn.Sequential(
            nn.Linear(2 * dim + noise_dim, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, dim),
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, x: torch.Tensor, z: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return x + self.net(torch.cat([x, z, q], dim=1))


def cosine_logits(queries: torch.Tensor, prototypes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return scale * F.normalize(queries, dim=1) @ F.normalize(prototypes, dim=1).T


def distillation_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    labels: torch.Tensor,
    temperature: torch.Tensor,
    gamma: float,
) -> torch.Tensor:
    """Eq. 1: CE(softmax(s), y) + gamma * T^2 * CE(softmax(s / T), softmax(t / T))."""
    soft_targets = F.softmax(teacher / temperature, dim=1)
    soft = -(soft_targets * F.log_softmax(student / temperature, dim=1)).sum(1).mean()
    return F.cross_entropy(student, labels) + gamma * temperature**2 * soft


def log_schedule(step: int, steps: int, start: int, end: int) -> int:
    """An integer going from `start` to `end` on a logarithmic scale over `steps` steps."""
    if steps <= 1:
        return end
    fraction = min(step, steps - 1) / (steps - 1)
    return max(1, round(math.exp(math.log(start) + fraction * (math.log(end) - math.log(start)))))


def generated_count(k_max: int, k_real: int) -> int:
    """Features the generator adds to a class with `k_real` real ones: the missing ones up to k_max."""
    return max(k_max - k_real, 0)


@dataclass
class GeneratorConfig:
    schedule: str = "weaken-student"
    iterations: int = 6000  # miniImageNet setting of the paper (Appendix A)
    n_way: int = 5
    queries: int = 1  # S_test holds one example per class (section 3)
    k_max: int = 128  # k_teacher on miniImageNet
    k_small: int = 5  # "plain": k_train drawn from 1..k_small; "strengthen-teacher": the fixed k_train
    members: int = 1  # ensemble size (the paper uses 20 on miniImageNet)
    temperature: float = 7.0  # learnable, initial value
    scale: float = 150.0  # cosine scale, learnable, initial value
    gamma: float = 5.0
    lr: float = 1e-3
    noise_dim: int = 0  # 0: the feature dimension
    hidden: int = 0  # 0: max(256, 2 x feature dimension)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {SCHEDULES}, not {self.schedule!r}")
        if self.members < 1 or self.iterations < 1 or self.k_max < 2:
            raise ConfigError("members and iterations must be positive and k_max at least 2")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GeneratorMember:
    """One generator with the classifier parameters learned alongside it."""

    generator: FeatureGenerator
    scale: float
    temperature: float


class _Episodes:
    """Draws few-shot tasks over per-class feature rows with one numpy generator."""

    def __init__(self, labels: np.ndarray, rng: np.random.Generator) -> None:
        self.rows = [np.flatnonzero(labels == c) for c in range(int(labels.max()) + 1)]
        self.rng = rng

    def classes(self, n_way: int, min_size: int) -> np.ndarray:
        eligible = [c for c, r in enumerate(self.rows) if len(r) >= min_size]
        if len(eligible) < n_way:
            raise ConfigError(
                f"need {n_way} base classes with {min_size} features; only {len(eligible)} have them"
            )
        return self.rng.choice(eligible, n_way, replace=False)

    def draw(self, c: int, count: int, exclude: np.ndarray | None = None) -> np.ndarray:
        pool = self.rows[c] if exclude is None else np.setdiff1d(self.rows[c], exclude)
        return self.rng.choice(pool, min(count, len(pool)), replace=False)


def augment_class(
    generator: FeatureGenerator, real: torch.Tensor, count: int, noise: torch.Tensor | None = None
) -> torch.Tensor:
    """`count` generated features for one class from its real features [k, d]: x cycles through the real
    ones, q is their mean, z is standard normal (or the given noise [count, noise_dim])."""
    if count == 0:
        return real.new_zeros((0, real.shape[1]))
    x = real[torch.arange(count) % len(real)]
    q = real.mean(0, keepdim=True).expand(count, -1)
    z = torch.randn(count, generator.noise_dim) if noise is None else noise
    return generator(x, z, q)


def _train_member(
    features: torch.Tensor, labels: np.ndarray, cfg: GeneratorConfig, member: int, progress: Progress
) -> tuple[GeneratorMember, list[float]]:
    dim = features.shape[1]
    torch.manual_seed(cfg.seed * 1000 + member)
    rng = np.random.default_rng([cfg.seed, member])
    generator = FeatureGenerator(dim, cfg.noise_dim or dim, cfg.hidden or max(256, 2 * dim))
    log_scale = nn.Parameter(torch.tensor(math.log(cfg.scale)))
    log_temperature = nn.Parameter(torch.tensor(math.log(cfg.temperature)))
    optimizer = torch.optim.Adam([*generator.parameters(), log_scale, log_temperature], lr=cfg.lr)
    episodes = _Episodes(labels, rng)
    # each member's teacher sees its own fixed subset of k_max real examples per class (section 4)
    teacher_sets = [episodes.draw(c, cfg.k_max) for c in range(len(episodes.rows))]
    gamma = 0.0 if cfg.schedule == "no-distillation" else cfg.gamma
    task = progress.add_task(f"generator {member + 1}/{cfg.members}", total=cfg.iterations)
    losses = []
    for step in range(cfg.iterations):
        if cfg.schedule == "weaken-student":
            k_train, k_teacher = log_schedule(step, cfg.iterations, cfg.k_max, 1), cfg.k_max
        elif cfg.schedule == "strengthen-teacher":
            k_train = cfg.k_small
            k_teacher = log_schedule(step, cfg.iterations, cfg.k_small, cfg.k_max)
        else:
            k_train, k_teacher = int(rng.integers(1, cfg.k_small + 1)), cfg.k_max
        classes = episodes.classes(cfg.n_way, k_train + cfg.queries)
        scale, temperature = log_scale.exp(), log_temperature.exp()
        student_protos, teacher_protos, queries, query_labels = [], [], [], []
        for i, c in enumerate(classes):
            support = episodes.draw(c, k_train)
            test = episodes.draw(c, cfg.queries, exclude=support)
            real = features[support]
            fake = augment_class(generator, real, generated_count(cfg.k_max, len(support)))
            student_protos.append(torch.cat([real, fake]).mean(0))
            teacher_protos.append(features[teacher_sets[c][:k_teacher]].mean(0))
            queries.append(features[test])
            query_labels += [i] * len(test)
        q = torch.cat(queries)
        y = torch.tensor(query_labels)
        student = cosine_logits(q, torch.stack(student_protos), scale)
        with torch.no_grad():
            teacher = cosine_logits(q, torch.stack(teacher_protos), scale)
        loss = distillation_loss(student, teacher, y, temperature, gamma)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        progress.update(task, advance=1)
    progress.remove_task(task)
    member_out = GeneratorMember(generator.eval(), log_scale.exp().item(), log_temperature.exp().item())
    return member_out, losses


def train_generators(
    features: torch.Tensor, labels: np.ndarray, cfg: GeneratorConfig
) -> tuple[list[GeneratorMember], list[list[float]]]:
    """Meta-trains `cfg.members` generators on base-class features [N, d] with their labels."""
    members, histories = [], []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the matrices are tiny: extra threads only add synchronisation
    try:
        with Progress(transient=True) as progress:
            for member in range(cfg.members):
                trained, losses = _train_member(features.float(), labels, cfg, member, progress)
                members.append(trained)
                histories.append(losses)
    finally:
        torch.set_num_threads(threads)
    return members, histories


@torch.no_grad()
def augmented_prototypes(
    members: list[GeneratorMember], support: torch.Tensor, n_way: int, k_shot: int, k_max: int
) -> list[torch.Tensor]:
    """Per member, the class prototypes of class-major support features [n_way * k_shot, d] after adding
    each class's generated features."""
    per_class = support.reshape(n_way, k_shot, -1)
    count = generated_count(k_max, k_shot)
    return [
        torch.stack(
            [torch.cat([real, augment_class(m.generator, real, count)]).mean(0) for real in per_class]
        )
        for m in members
    ]


@torch.no_grad()
def ensemble_probabilities(
    members: list[GeneratorMember], prototypes: list[torch.Tensor], queries: torch.Tensor
) -> torch.Tensor:
    """The average of the members' students' softmax predictions (section 4, ensemble learning)."""
    return torch.stack(
        [
            F.softmax(cosine_logits(queries, p, torch.tensor(m.scale)), dim=1)
            for m, p in zip(members, prototypes, strict=True)
        ]
    ).mean(0)


def evaluate_generators(
    members: list[GeneratorMember],
    features: torch.Tensor,
    labels: np.ndarray,
    *,
    split: str,
    n_way: int,
    k_shot: int,
    k_max: int,
    n_query: int = 15,
    episodes: int = 1000,
    seed: int = 0,
) -> tuple[EvalResult, EvalResult]:
    """Accuracy of the plain cosine prototype classifier and of the generator-augmented one (ensemble-
    averaged), on the same seeded episodes."""
    sampler = EpisodeSampler(labels, n_way, k_shot, n_query, episodes, seed)
    truth = torch.arange(n_way).repeat_interleave(n_query)
    plain, augmented = np.empty(episodes), np.empty(episodes)
    scale = torch.tensor(float(np.mean([m.scale for m in members])))
    for i, episode in enumerate(sampler):
        support, queries = features[episode.support.ravel()], features[episode.query.ravel()]
        real_protos = support.reshape(n_way, k_shot, -1).mean(1)
        plain[i] = (cosine_logits(queries, real_protos, scale).argmax(1) == truth).float().mean().item()
        protos = augmented_prototypes(members, support, n_way, k_shot, k_max)
        augmented[i] = (
            (ensemble_probabilities(members, protos, queries).argmax(1) == truth).float().mean().item()
        )

    def result(correct: np.ndarray, classifier: str) -> EvalResult:
        accuracy = 100.0 * correct
        ci95 = 1.96 * accuracy.std(ddof=1) / math.sqrt(episodes) if episodes > 1 else 0.0
        return EvalResult(
            split, n_way, k_shot, n_query, episodes, classifier, float(accuracy.mean()), float(ci95)
        )

    name = f"prototype/cosine + {len(members)} generator{'s' if len(members) > 1 else ''}"
    return result(plain, "prototype/cosine"), result(augmented, name)
