"""Synthetic blood labs for the built-in world: the 50 Symile-MIMIC labs as raw values with realistic missingness.

Part of the synthetic world described in `pacx/world/physiology.py`. Makes the raw input of METHOD.md "Stage 1b": the
50 MIMIC-IV labs (pacx.data.labs.LAB_ITEMIDS, ascending itemids) in MIMIC units, NaN = not measured. Turning them into
percentiles is pacx.data.labs.LabPercentiles' job, as for real data.

How values are made: each lab is `center + spread * (noise + sum(coef * driver))` (or `center * exp(...)` for
right-skewed labs), where the drivers are the patient's latent z-scores (renal dysfunction, fluid overload,
inflammation; cardiac enlargement and age more weakly); `coef` is the effect of one SD of the driver in units of
the lab's own noise SD. Strong: renal (urea 1.6, phosphate 0.7, bicarbonate -0.5, ...), fluid (sodium -0.8,
albumin -0.7, hematocrit -0.5, chloride -0.5, RDW 0.5, INR 0.4, ...), inflammation (WBC 1.0, lactate 1.0,
neutrophils 0.7, immature granulocytes 0.6, ...). Moderate: cardiac (RDW 0.6, sodium -0.4, urea 0.4, hematocrit
-0.4: the anaemia, hyponatraemia and cardiorenal urea of heart failure), habitus (glucose 0.4, ALT 0.4, AST 0.25:
obesity and fatty liver; creatinine through muscle mass, `pacx.world.physiology`). Weak: age (albumin -0.2, hematocrit
-0.2). Creatinine and potassium are the patient's true values plus assay noise; hemoglobin,
RBC, PT, RDW-SD and the absolute differential counts are derived from other labs as in a real analyser.
Labs come in panels (basic metabolic panel, blood count, differential, coagulation, liver tests, blood gas, ...);
a panel is ordered or not as a whole, more often in sicker patients, so missingness is mildly informative.

Notation: N = patients, L = 50 labs.
"""
import numpy as np

from pacx.data.labs import LAB_ITEMIDS

# itemid: (name, unit, "lin" | "log", center, spread, {driver: coefficient}, decimals, panel)
# "log" labs are center * exp(spread * (noise + drive)): right-skewed like real enzymes and counts.
_LINEAR_OR_LOG = {
    50802: ("Base Excess", "mEq/L", "lin", 0.0, 3.0, {"renal": -0.5, "inflammation": -0.4}, 0, "blood_gas"),
    50804: ("Total CO2", "mEq/L", "lin", 25.0, 3.0, {"renal": -0.5}, 0, "blood_gas"),
    50813: ("Lactate", "mmol/L", "log", 1.4, 0.35, {"inflammation": 1.0, "fluid": 0.3}, 1, "lactate"),
    50818: ("pCO2", "mm Hg", "lin", 40.0, 6.0, {"fluid": 0.2}, 0, "blood_gas"),
    50820: ("pH", "units", "lin", 7.40, 0.04, {"renal": -0.4, "inflammation": -0.3}, 2, "blood_gas"),
    50821: ("pO2", "mm Hg", "log", 90.0, 0.3, {"fluid": -0.6}, 0, "blood_gas"),
    50861: ("ALT", "IU/L", "log", 25.0, 0.6, {"fluid": 0.3, "habitus": 0.4}, 0, "liver"),
    50862: ("Albumin", "g/dL", "lin", 3.6, 0.45, {"fluid": -0.7, "inflammation": -0.4, "age": -0.2}, 1, "liver"),
    50863: ("Alkaline Phosphatase", "IU/L", "log", 80.0, 0.4, {}, 0, "liver"),
    50868: ("Anion Gap", "mEq/L", "lin", 13.0, 3.0, {"renal": 0.5, "inflammation": 0.4}, 0, "metabolic"),
    50878: ("AST", "IU/L", "log", 28.0, 0.6, {"fluid": 0.3, "habitus": 0.25}, 0, "liver"),
    50882: ("Bicarbonate", "mEq/L", "lin", 25.0, 3.0, {"renal": -0.5}, 0, "metabolic"),
    50885: ("Bilirubin, Total", "mg/dL", "log", 0.6, 0.6, {"fluid": 0.3}, 1, "liver"),
    50893: ("Calcium, Total", "mg/dL", "lin", 8.9, 0.5, {"renal": -0.4}, 1, "metabolic"),
    50902: ("Chloride", "mEq/L", "lin", 102.0, 4.0, {"fluid": -0.5}, 0, "metabolic"),
    50910: ("Creatine Kinase (CK)", "IU/L", "log", 120.0, 0.8, {}, 0, "ck"),
    50931: ("Glucose", "mg/dL", "log", 115.0, 0.3, {"inflammation": 0.4, "habitus": 0.4}, 0, "metabolic"),
    50934: ("H (hemolysis index)", "", "log", 10.0, 0.7, {}, 0, "serum_indices"),
    50947: ("I (icterus index)", "", "log", 2.0, 0.6, {}, 0, "serum_indices"),
    50960: ("Magnesium", "mg/dL", "lin", 2.0, 0.25, {"renal": 0.4}, 1, "metabolic_extra"),
    50970: ("Phosphate", "mg/dL", "lin", 3.5, 0.7, {"renal": 0.7}, 1, "metabolic_extra"),
    50983: ("Sodium", "mEq/L", "lin", 139.0, 3.0, {"fluid": -0.8, "cardiac": -0.4}, 0, "metabolic"),
    51006: ("Urea Nitrogen", "mg/dL", "log", 18.0, 0.3, {"renal": 1.6, "fluid": 0.3, "cardiac": 0.4}, 0, "metabolic"),
    51133: ("Absolute Lymphocyte Count", "K/uL", "log", 1.5, 0.4, {"inflammation": -0.5}, 2, "abs_lymphocytes"),
    51146: ("Basophils", "%", "log", 0.4, 0.5, {}, 1, "differential"),
    51200: ("Eosinophils", "%", "log", 1.5, 0.7, {"inflammation": -0.3}, 1, "differential"),
    51221: ("Hematocrit", "%", "lin", 36.0, 5.0, {"fluid": -0.5, "renal": -0.3, "cardiac": -0.4, "age": -0.2}, 1,
            "blood_count"),
    51237: ("INR(PT)", "", "log", 1.15, 0.2, {"fluid": 0.4}, 1, "coagulation"),
    51244: ("Lymphocytes", "%", "lin", 20.0, 8.0, {"inflammation": -0.6}, 1, "differential"),
    51248: ("MCH", "pg", "lin", 30.0, 2.0, {}, 1, "blood_count"),
    51249: ("MCHC", "g/dL", "lin", 33.0, 1.2, {}, 1, "blood_count"),
    51250: ("MCV", "fL", "lin", 90.0, 6.0, {}, 0, "blood_count"),
    51254: ("Monocytes", "%", "lin", 7.0, 2.0, {}, 1, "differential"),
    51256: ("Neutrophils", "%", "lin", 70.0, 9.0, {"inflammation": 0.7}, 1, "differential"),
    51265: ("Platelet Count", "K/uL", "log", 230.0, 0.35, {"inflammation": 0.2}, 0, "blood_count"),
    51275: ("PTT", "sec", "log", 32.0, 0.2, {}, 1, "coagulation"),
    51277: ("RDW", "%", "lin", 14.0, 1.5, {"fluid": 0.5, "cardiac": 0.6}, 1, "blood_count"),
    51301: ("White Blood Cells", "K/uL", "log", 8.5, 0.3, {"inflammation": 1.0}, 1, "blood_count"),
    51678: ("L (lipemia index)", "", "log", 20.0, 0.6, {}, 0, "serum_indices"),
    52135: ("Immature Granulocytes", "%", "log", 0.4, 0.5, {"inflammation": 0.6}, 1, "differential"),
}

# itemid: (name, unit, decimals, panel) for labs computed from the patient state or from other labs.
_DERIVED = {
    50912: ("Creatinine", "mg/dL", 1, "metabolic"),
    50971: ("Potassium", "mEq/L", 1, "metabolic"),
    51222: ("Hemoglobin", "g/dL", 1, "blood_count"),
    51274: ("PT", "sec", 1, "coagulation"),
    51279: ("Red Blood Cells", "m/uL", 2, "blood_count"),
    52069: ("Absolute Basophil Count", "K/uL", 2, "differential"),
    52073: ("Absolute Eosinophil Count", "K/uL", 2, "differential"),
    52074: ("Absolute Monocyte Count", "K/uL", 2, "differential"),
    52075: ("Absolute Neutrophil Count", "K/uL", 2, "differential"),
    52172: ("RDW-SD", "fL", 1, "rdw_sd"),
}

# Probability that a panel was ordered for an average patient (roughly the MIMIC-IV frequency order of symile's
# constants.py: blood count and metabolic panel almost always, blood gases rarely).
_PANEL_ORDERED = {
    "metabolic": 0.96, "blood_count": 0.95, "metabolic_extra": 0.85, "coagulation": 0.6, "differential": 0.55,
    "rdw_sd": 0.55, "liver": 0.5, "serum_indices": 0.45, "abs_lymphocytes": 0.4, "lactate": 0.35, "ck": 0.3,
    "blood_gas": 0.2,
}
_ACUITY_LOGIT = 0.6  # sicker patients (high fluid + inflammation) get more panels ordered: informative missingness
_LAB_DROPPED = 0.03  # a single result missing from an ordered panel (haemolysed sample, cancelled test)


def lab_table() -> list[tuple[int, str, str, str]]:
    """(itemid, name, unit, panel) for the 50 labs in column order."""
    spec = {i: (s[0], s[1], s[7]) for i, s in _LINEAR_OR_LOG.items()}
    spec |= {i: (s[0], s[1], s[3]) for i, s in _DERIVED.items()}
    return [(i, *spec[i]) for i in LAB_ITEMIDS]


def sample_labs(drivers: dict[str, np.ndarray], creatinine: np.ndarray, potassium: np.ndarray,
                rng: np.random.Generator) -> np.ndarray:
    """Raw lab values (N, L) float64 in MIMIC units, NaN where the lab was not measured.

    drivers: latent z-scores by name ("renal", "fluid", "inflammation", "cardiac", "age", "habitus"), each (N,);
    a driver left out counts as 0 for every lab.
    creatinine, potassium: the patients' true serum values (mg/dL, mmol/L), each (N,).
    """
    n = len(creatinine)
    value = {}
    for itemid, (_, _, kind, center, spread, coefs, _, _) in _LINEAR_OR_LOG.items():
        z = rng.standard_normal(n) + sum(c * drivers.get(d, 0.0) for d, c in coefs.items())
        value[itemid] = center + spread * z if kind == "lin" else center * np.exp(spread * z)
    value[50912] = creatinine * np.exp(0.05 * rng.standard_normal(n))  # 5% assay noise
    value[50971] = potassium + 0.1 * rng.standard_normal(n)
    value[51222] = value[51221] / 3.0 + 0.3 * rng.standard_normal(n)  # rule of three: Hct ~ 3 x Hgb
    value[51279] = value[51221] / value[51250] * 10.0  # RBC = Hct / MCV
    value[51274] = 11.5 * value[51237] + 0.4 * rng.standard_normal(n)  # PT tracks INR
    value[52172] = value[51277] * value[51250] / 28.0 + 1.5 * rng.standard_normal(n)  # RDW-SD ~ RDW-CV x MCV
    for abs_id, pct_id in ((52069, 51146), (52073, 51200), (52074, 51254), (52075, 51256)):
        value[abs_id] = value[51301] * value[pct_id] / 100.0  # absolute count = WBC x fraction
    # Keep every value physically possible (percentages, pH) after the Gaussian tails.
    for itemid in (51244, 51254, 51256):
        value[itemid] = np.clip(value[itemid], 0.5, 99.0)
    value[50820] = np.clip(value[50820], 6.9, 7.7)

    decimals = {i: s[6] for i, s in _LINEAR_OR_LOG.items()} | {i: s[2] for i, s in _DERIVED.items()}
    labs = np.stack([np.round(value[i], decimals[i]) for i in LAB_ITEMIDS], axis=1)  # (N, L)
    return np.where(_sample_observed(drivers, rng), labs, np.nan)


def _sample_observed(drivers: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """(N, L) bool: True where the lab was measured. Panels are ordered as a whole, more often when acute."""
    n = len(drivers["fluid"])
    acuity = 0.5 * (drivers["fluid"] + drivers["inflammation"])
    ordered = {}
    for panel, p in _PANEL_ORDERED.items():
        logit = np.log(p / (1 - p)) + _ACUITY_LOGIT * acuity
        ordered[panel] = rng.random(n) < 1.0 / (1.0 + np.exp(-logit))
    panel_of = {itemid: panel for itemid, _, _, panel in lab_table()}
    observed = np.stack([ordered[panel_of[i]] for i in LAB_ITEMIDS], axis=1)  # (N, L)
    observed &= rng.random(observed.shape) >= _LAB_DROPPED
    # Symile-MIMIC keeps only admissions with at least one lab: give the rest their creatinine.
    observed[~observed.any(axis=1), LAB_ITEMIDS.index(50912)] = True
    return observed
