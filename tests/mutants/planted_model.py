"""Planted bugs of the single-process training and model checks: accumulation, masking, fine-tuning,
sizes and FLOPs. Run with `python tests/mutants/plant.py --area model`."""

from plant import Planted

ACCUMULATION = "tests/unit/train/test_accumulation.py"
MASKING = "tests/unit/model/test_masking.py"
NER_OVERFIT = "tests/unit/train/test_finetune.py::test_ner_overfits_a_small_builtin_set"
CLASSIFY_OVERFIT = "tests/unit/train/test_finetune.py::test_classify_overfits_a_small_builtin_set"
PRESETS = "tests/unit/model/test_presets.py"
CLI_SIZES = "tests/integration/test_cli.py::test_model_info_prints_guide_sizes"

PLANTED = [
    # accumulation: Engine against one whole-batch mean cross-entropy by torch.nn.functional
    Planted(
        name="accum-loss-divided-by-k",
        claim="accumulated gradients equal the whole-batch mean cross-entropy's",
        file="src/lmforge/train/engine.py",
        find="            total = loss * self.scale\n",
        replace="            total = loss * self.scale / len(starts)\n",
        tests=[ACCUMULATION],
    ),
    Planted(
        name="accum-normaliser-off-by-constant",
        claim="accumulated gradients are divided by the batch's target count",
        file="src/lmforge/train/engine.py",
        find="        self.scale = self.layout.settings.dp / targets",
        replace="        self.scale = self.layout.settings.dp / (targets + 8)",
        tests=[ACCUMULATION],
    ),
    Planted(
        name="summed-loss-in-float32",
        claim="the loss keeps float64 logits in float64",
        file="src/lmforge/train/objectives.py",
        find="    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))",
        replace="    logits = logits.float()",
        tests=[ACCUMULATION],
    ),
    # masking, through Objective.prepare
    Planted(
        name="mask-constant-replacement",
        claim="random replacements are uniform over the non-special vocabulary",
        file="src/lmforge/model/masking.py",
        find="    random_tokens = pool[picks.to(input_ids.device)]",
        replace="    random_tokens = pool[torch.zeros_like(picks).to(input_ids.device)]",
        tests=[MASKING],
    ),
    Planted(
        name="mask-biased-to-start",
        claim="every position is a target with the same probability",
        file="src/lmforge/model/masking.py",
        find="    chosen = (_uniform(input_ids, generator) < prob) & ~special",
        replace="    chosen = (_uniform(input_ids, generator) * torch.linspace(0.9, 1.1, input_ids.shape[-1])"
                " < prob) & ~special",
        tests=[MASKING],
    ),
    Planted(
        name="mask-prob-ignored-by-prepare",
        claim="Objective.prepare masks with the configured mask_prob",
        file="src/lmforge/train/objectives.py",
        find="                               special_ids=self.special_ids, generator=generator, prob=self.mask_prob)\n"
             "        first, total",
        replace="                               special_ids=self.special_ids, generator=generator)\n"
                "        first, total",
        tests=[MASKING],
    ),
    # fine-tuning: overfit small built-in data to a high bar
    Planted(
        name="ner-tags-shifted-one-token",
        claim="each word's tag is trained on its first sub-token",
        file="src/lmforge/train/finetune_data.py",
        find="            targets.append(align_tags(word_ids, encode(example.tags, label_set)))",
        replace="            targets.append([IGNORE_INDEX] + align_tags(word_ids, encode(example.tags, label_set))[:-1])",
        tests=[NER_OVERFIT],
    ),
    Planted(
        name="ner-reads-last-sub-token",
        claim="a word's predicted tag is read at its first sub-token, where it was trained",
        file="src/lmforge/train/finetune_data.py",
        find="        if word is not None and word != previous:\n            tags[word] = label_set[tag]",
        replace="        if word is not None:\n            tags[word] = label_set[tag]",
        tests=[NER_OVERFIT],
    ),
    Planted(
        name="finetune-loss-does-not-reach-the-weights",
        claim="fine-tuning updates the weights",
        file="src/lmforge/train/task_objective.py",
        find="        return self.mean_loss(module, rows) * count, None\n",
        replace="        return self.mean_loss(module, rows) * count * 0.0, None\n",
        tests=[CLASSIFY_OVERFIT],
    ),
    Planted(
        name="classify-labels-misaligned",
        claim="each example is trained on its own label",
        file="src/lmforge/train/finetune_data.py",
        find="else torch.tensor(targets)",
        replace="else torch.tensor(targets).roll(1)",
        tests=[CLASSIFY_OVERFIT],
    ),
    # sizes and FLOPs, pinned to the hand-derived formulas
    Planted(
        name="flops-wr-term-dropped",
        claim="FLOPs per token count every term of the hand-derived formula",
        file="src/lmforge/model/info.py",
        find="        per_layer += 6 * k * d + 4 * (k / t) * d * d",
        replace="        per_layer += 6 * k * d",
        tests=[PRESETS],
    ),
    Planted(
        name="flops-wr-counted-once",
        claim="W_r is one matrix per layer",
        file="src/lmforge/model/info.py",
        find="    r_proj = config.n_layers * d * d if config.position == \"xl\" else 0",
        replace="    r_proj = d * d if config.position == \"xl\" else 0",
        tests=[PRESETS],
    ),
    Planted(
        name="cli-sizes-flops-term-dropped",
        claim="`lmforge model info` prints the hand-derived figures",
        file="src/lmforge/model/info.py",
        find="        per_layer += 6 * k * d + 4 * (k / t) * d * d",
        replace="        per_layer += 6 * k * d",
        tests=[CLI_SIZES],
    ),
]
