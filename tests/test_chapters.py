"""Every chapter executed at smoke size by papermill (through the runner, cached); its results JSON read back;
every claim holds; the values that outside checks read are present. Wall times are recorded, not asserted."""

from __future__ import annotations

import json
import re

import pytest

from dltheory.machinery.paths import build_dir
from dltheory.machinery.runner import chapters

# Names fixed by the issues; outside checks read them.
REQUIRED_VALUES = {
    "edge-of-stability": ["sharpness_ratio_init_max", "sharpness_ratio_late_min", "sharpness_ratio_late_max",
                          "ngd_ratio", "sqrt_loss_ratio", "toy_flow_time_spread", "quadratic_threshold"],
    "sde-scaling-rules": ["sqrt_rule_loss_spread", "no_scaling_loss_ratio", "linear_scaling_loss_ratio",
                          "svag_distance_l1_l2", "svag_distance_l2_l4", "sde_vs_discrete_rel_gap",
                          "rule_matches_paper"],
    "gradient-noise": ["sw_reject_dir_b4_early", "sw_reject_dir_b256_early", "sw_reject_dir_b1024_early",
                       "sw_reject_dir_b256_late", "sgn_skew_ratio_b64_early", "sgn_kurt_ratio_b64_early",
                       "sgn_var_ratio_b256_early", "tail_index_dir_b1_early", "tail_index_dir_b1024_early",
                       "tail_index_pooled_b1024_early", "tail_index_pooled_gauss_pred_early",
                       "batch_gaussian_threshold_early", "sgn_minibatches"],
    "batchnorm-residual": ["fwd_var_slope_bnres", "fwd_var_final_bnres", "bwd_kappa_hat_bnres", "bwd_log_ratio_bnres",
                           "bwd_log_ratio_bnres_pred", "bwd_profile_slope_bnres", "bwd_last4_gain_bnres",
                           "bwd_last4_gain_bnres_pred", "fwd_log2_q_slope_res", "bwd_log2_g_slope_res",
                           "bwd_log_ratio_res", "bwd_log_gain_bnplain", "bwd_log_ratio_bnplain",
                           "gradw_ratio_first_last_bnres", "gradw_ratio_first_last_res",
                           "gradw_ratio_first_last_bnplain"],
    "activation-gram": ["lmin_relu_d2", "lmin_tanh_d2", "lmin_relu_d32", "lmin_tanh_d32", "poly_rank_measured",
                        "poly_rank_formula", "mc_vs_closed_form_rel_err", "train_loss_ratio_tanh_relu_d2"],
    "rnn-learning": ["decode_err_m64", "decode_err_m1024", "kernel_rel_err_m1024", "acc_parity_rnn",
                     "acc_parity_additive", "acc_substring_rnn", "acc_control_additive"],
    "progressive-distillation": ["steps_ce", "steps_oneshot", "steps_progressive", "speedup_progressive_vs_ce",
                                 "corr_in_support_transition", "corr_in_support_final", "corr_off_support_max",
                                 "n", "k", "seeds", "steps_ce_transformer", "steps_progressive_transformer",
                                 "speedup_progressive_vs_ce_transformer", "corr_in_support_transition_transformer",
                                 "corr_in_support_final_transformer"],
    "context-enhanced-learning": ["d1_closed_form_maxerr", "std_w0_grad_norm_last", "std_w0_grad_norm_below_last_max",
                                  "grad_acc_k1_r0_1", "grad_acc_k1_r0_5", "grad_acc_k1_r0_9", "grad_acc_k2_r0_1",
                                  "grad_acc_k2_r0_5", "grad_acc_k2_r0_9", "grad_acc_k3_r0_1", "grad_acc_k3_r0_5",
                                  "grad_acc_k3_r0_9", "grad_strict_k1_r0_1", "grad_strict_k1_r0_5",
                                  "grad_strict_k1_r0_9", "grad_strict_k2_r0_1", "grad_strict_k2_r0_5",
                                  "grad_strict_k2_r0_9", "grad_strict_k3_r0_1", "grad_strict_k3_r0_5",
                                  "grad_strict_k3_r0_9", "cel_anneal_final_acc_D256", "cel_anneal_final_acc_D512",
                                  "cel_anneal_final_acc_D1024", "cel_anneal_final_acc_D2048",
                                  "cel_fixed_final_acc_D1024", "nodrop_final_acc_D2048", "std_final_acc_D8192",
                                  "sample_efficiency_ratio", "chance_acc", "n", "d"],
    "self-distillation-zero": ["pass1_init", "grpo_samples_to_0_5", "sdzero_k1_samples_to_0_5",
                               "sdzero_k0_5_samples_to_0_5", "sdzero_k0_samples_to_0_5", "speedup_k1_T4",
                               "speedup_k1_T6", "grpo_final_pass1_T6", "sdzero_k0_5_final_pass1",
                               "sdzero_noreward_k0_5_final_pass1", "loc_precision_k0", "loc_precision_k1",
                               "wrong_token_share", "kappa0_autograd_maxerr", "budget"],
    "learned-optimizers": ["lopt_heldout_loss", "adam_default_heldout_loss", "adam_tuned_heldout_loss",
                           "untrained_heldout_loss", "lopt_vs_tuned_adam", "meta_params", "meta_train_s",
                           "norm_update_rms_dev_max", "raw_update_rms_min", "raw_update_rms_max",
                           "norm_final_loss_w1024", "raw_final_loss_w1024", "norm_final_loss_d8", "raw_final_loss_d8"],
    "attention-to-ssm": ["la_ssm_identity_symbolic", "la_ssm_max_err", "ssd_decay_max_err",
                         "stage2_init_max_abs_diff", "teacher_acc", "stage1_acc", "two_stage_acc", "two_stage_kl",
                         "direct_random_acc", "direct_random_kl", "direct_copy_acc", "direct_copy_kl",
                         "linattn_init_acc", "budget_steps"],
    "simple-to-hard": ["hard_b_acc_none", "simple_b_acc_none", "hard_a_acc_none", "hard_b_via_conversion_ce",
                       "hard_b_acc_ce", "hard_b_acc_mse_0p03", "hard_b_acc_mse_0p1", "align_early_none",
                       "align_early_mse_0p1", "spearman_align_hardb", "first_order_ratio", "cos_emb_none",
                       "cos_emb_ce", "cos_emb_mse_0p001", "cos_emb_mse_0p003", "cos_emb_mse_0p01",
                       "cos_emb_mse_0p03", "cos_emb_mse_0p1"],
    "parsing-pcfg": ["exact_mismatches", "n_exact_strings", "n_exact_mlm_contexts", "io_float_max_err",
                     "io_autograd_max_err", "ce_unigram", "ce_neighbour", "ce_model", "ce_io", "ce_gap_model_io",
                     "kl_io_model", "gap_closed_frac", "probe_r2_trained", "probe_r2_random", "probe_r2_position",
                     "parse_f1_trained", "parse_f1_random", "parse_f1_io"],
    "skill-targeted-training": ["grad_share_known", "token_share_known", "profile_mass_on_missing",
                                "predicted_speedup", "speedup_sel_sgd", "speedup_sel_adam", "acc_uniform_at_40",
                                "acc_sel_at_40", "acc_uniform_final", "acc_sel_final", "steps_uniform_lrmatched",
                                "steps_sel", "tabular_closed_form_rel_err"],
    "transformers-as-programs": ["tint_forward_err", "tint_backward_err", "tint_descent_err", "tint_sgd_step_err",
                                 "n_prefix", "n_prefix_naive", "ln_fd_slope", "gelu_fd_slope",
                                 "stopgrad_cos_small", "stopgrad_cos_unit", "icl_mse_trained", "icl_mse_theory",
                                 "icl_rel_diff_trained_gd", "icl_eff_step", "template_mismatches",
                                 "n_template_strings", "beta_min_exact", "counter_mismatches", "eliza_resp_acc",
                                 "cf_follow_count", "cf_follow_increment", "cf_follow_unedited"],
    "progressive-subnetworks": ["gap_slope_scaled", "gap_slope_unscaled", "raptr_max_rel_jump",
                                "stack_first_rel_jump", "stack_minus_raptr_first_jump", "raptr_flops_ratio",
                                "raptr_full_loss_at_boundaries_1", "raptr_full_loss_at_boundaries_2",
                                "raptr_full_loss_at_boundaries_3", "raptr_vs_full_eqflops_final",
                                "full_final_loss", "full_eqflops_final_loss", "raptr_final_loss",
                                "stack_final_loss", "predicted_drop_first_order"],
    "skill-localization": ["n_graftable", "active_frac", "active_frac_dense", "rec_movement_ge5_s1pct",
                           "rec_movement_odd_s1pct", "rec_movement_ge5_s3pct", "rec_movement_odd_s3pct",
                           "rec_random_ge5_s3pct", "rec_movement_dense_s1pct", "rec_movement_adam_s3pct",
                           "acc_opt_ge5_s01pct", "opt_size_ge5_s01pct", "acc_movement_at_opt_size_ge5",
                           "ece_ft_ge5", "ece_graft_ge5_s1pct", "mt_overlap_ge5_ge4", "mt_overlap_ge5_odd",
                           "mt_acc_ge5_own_graft", "mt_acc_ge5_graft_of_odd", "mask_grad_relerr"],
    "teacher-selection": ["grace_spearman", "teacher_acc_spearman", "student_loss_spearman", "grad_norm_spearman",
                          "sampled_acc_spearman", "grace_regret", "teacher_acc_regret", "perfect_teacher_gap",
                          "kl_mc_rel_err", "n_teachers", "proj_dim", "grace_prompts"],
}
SLUGS = list(chapters())
GLUE_RE = re.compile(r"\{glue:(?:text|md|figure|math)?\}`([A-Za-z_][A-Za-z0-9_]*)")


def _results(slug):
    path = build_dir() / "results" / f"{slug}.json"
    assert path.is_file(), f"{path} missing; the chapter did not finish"
    return json.loads(path.read_text())


@pytest.mark.chapters
@pytest.mark.parametrize("slug", SLUGS)
def test_chapter_executes_and_claims_hold(slug, executed_chapters, record_property):
    r = executed_chapters[slug]
    record_property("wall_s", r.wall_s)
    assert r.status in ("ran", "cached"), f"{slug} failed: {r.error}"
    data = _results(slug)
    assert data["chapter"] == slug and data["size"] == "smoke" and data["seed"] == 0
    assert list(data) == ["chapter", "size", "seed", "device", "versions", "wall_s", "values", "claims"]
    assert data["claims"], f"{slug} checks no claim"
    failed = [c for c in data["claims"] if not c["holds"]]
    assert not failed, f"claims that do not hold in {slug}: {failed}"
    for c in data["claims"]:
        assert c["source"] and c["statement"]
    headlines = [c["id"] for c in data["claims"] if c["headline"]]
    assert len(headlines) == 1, f"{slug} must mark exactly one claim as its headline, has {headlines}"


@pytest.mark.chapters
@pytest.mark.parametrize("slug", SLUGS)
def test_chapter_records_required_values(slug, executed_chapters):
    values = _results(slug)["values"]
    missing = [n for n in REQUIRED_VALUES.get(slug, []) if n not in values]
    assert not missing, f"{slug} does not record {missing}"


@pytest.mark.chapters
@pytest.mark.parametrize("slug", SLUGS)
def test_every_glued_name_in_the_text_is_recorded(slug, executed_chapters):
    """A number in the prose comes from glue, and every glue name is a recorded value."""
    names = set(GLUE_RE.findall(chapters()[slug].read_text()))
    values = _results(slug)["values"]
    assert names, f"{slug} glues no computed number into its text"
    assert names <= set(values), f"glued but not recorded in {slug}: {sorted(names - set(values))}"


def contract_problems(text: str) -> list[str]:
    """What a chapter source lacks of the chapter contract (shared/DESIGN.md §3); empty when it follows it. Also
    used on the skeleton that `python -m dltheory new` writes."""
    checks = [
        ("{prf:theorem}" in text, "state the claim in a theorem box"),
        ("import sympy" in text and "simplify(" in text, "derive the key step with sympy"),
        (":tags: [parameters]" in text, "the first code cell is tagged parameters"),
        ("resolve_size(" in text, "validate the sizes with resolve_size"),
        ("headline=True" in text, "mark the paper's main result as the headline claim"),
        ("## Try it" in text and "## Exercises" in text, "a Try it section and exercises"),
        (2 <= text.count("{exercise-start}") <= 4 and text.count("{solution-start}") == text.count("{exercise-start}"),
         "2 to 4 exercises, each with a solution"),
        (":class: dropdown" in text, "solutions are hidden behind a toggle"),
        (text.rstrip().endswith("run.finish()\n```"), "the last cell is run.finish()"),
        ("{cite:" in text, "cite the paper"),
        ("{glue:" in text, "glue computed numbers into the text"),
        ("plt.subplots(" not in text and "plt.figure(" not in text and "from dltheory.numerics.figures import" in text,
         "draw figures with dltheory.numerics.figures.figure (the book's one style)"),
        (text.count("mystnb:\n  image:\n    alt:") >= 1, "give every figure cell alt text (mystnb: image: alt:)"),
        (text.count(":tags: [answer") >= 2 and text.count(":tags: [autocheck") >= 2,
         "two exercises that check themselves (answer and autocheck cells)"),
    ]
    return [msg for ok, msg in checks if not ok]


@pytest.mark.parametrize("slug", SLUGS)
def test_chapter_follows_the_contract(slug):
    assert contract_problems(chapters()[slug].read_text()) == []
