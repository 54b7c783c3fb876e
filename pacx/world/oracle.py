"""The oracle report of a synthetic world: how much of each teacher embedding, each label and each latent factor a
LINEAR model explains from (a) the latent state, (b) the raw pixels, (c) the teachers' embeddings.

Why: Stage 2 can only distil into the image encoder what the image and the teacher embeddings share. This module
measures that share on the world itself, before any network is trained on images, so that a world (or a real data
set, with the latent columns left out) can be judged as a test bed for PaCX-MAE. Every model is fitted on the
TRAINING split and scored on the VALIDATION split; the test split is never read.

What is measured (all linear; regularisation chosen inside the training split only):
  embeddings   for each teacher embedding T (the lab DAE's 256-d target, the ECG teacher's embedding), computed
               exactly as Stage 2 computes its targets (`pacx.data.targets.symile_targets` on data_npy/, same cache):
               R^2 (variance-weighted over T's dimensions) of RidgeCV from the latent state and from the pixels;
               "oracle retrieval": top-1 / top-5 of the true T among 64 rows (in-batch, as train_distill.py's
               validation) by cosine between the centred ridge prediction and the centred targets (chance 1/64,
               5/64); and the linear analogue of Stage 2's two-tower InfoNCE: a regularised CCA between the pixels
               (256 principal components) and T, fitted on train (shrinkage 0.1, the top CCA_K = 8 pairs), with its
               validation canonical correlations and the same in-batch retrieval by cosine of the canonical variates
               (each weighted by the square root of its training canonical correlation).
  labels       validation AUROC of a logistic regression (LogisticRegressionCV, 3-fold on train) from the latent
               state, the pixels (their 256 principal components fitted on train: still linear in the pixels), the
               lab embedding and the ECG embedding.
  factors      validation R^2 of RidgeCV from the pixels, the lab embedding and the ECG embedding to each latent
               factor: the measured effect size of every factor in every modality.
  backbones    (with --backbones) the same for trained image encoders: validation R^2 of RidgeCV from each
               backbone's CLS features (the world's PNGs resized and ImageNet-normalised as evaluate.py feeds them)
               to each factor and each teacher embedding, and validation AUROC of the logistic regression to each
               label: the link between Stage 2 and the Stage-3 probes, measured.
The latent state is every `pacx.world.physiology.Physiology` field in world.json (creatinine as its log).

    python -m pacx.world.oracle --world runs/demo/world --labs_dae runs/demo/labs/last.pt \
        --ecg_weights runs/demo/ecg_teacher/teacher.pth --targets_cache runs/demo/targets
    python -m pacx.world.oracle ... --backbones mae=runs/demo/mae/last.pt,pacx=runs/demo/distill/encoder.pt \
        --out runs/demo/oracle_backbones.json

Writes oracle.json beside world.json (or --out) and prints the tables. Notation: N = patients of a split,
P = pixels, T = embedding width.
"""
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pacx.config import opt, parse_config
from pacx.errors import PacxError, exit_on_error

FACTORS = ("age_z", "habitus", "cardiac", "renal", "inflammation", "fluid")
RETRIEVAL_BATCH = 64  # train_distill.py's validation batch in the demo
CCA_K, CCA_SHRINK, PIXEL_PCS = 8, 0.1, 256


def _latent_matrix(samples: dict, rows: np.ndarray) -> np.ndarray:
    """(N, K) latent state: every Physiology field of world.json, creatinine as its log."""
    cols = []
    for name in ("age", "habitus", "cardiac", "renal", "inflammation", "fluid", "ctr", "creatinine", "potassium",
                 "heart_rate", "effusion", "congestion", "consolidation"):
        if name not in samples:
            continue  # worlds written before a field existed
        v = np.asarray(samples[name], np.float64)[rows]
        cols.append(np.log(v) if name == "creatinine" else v)
    return np.stack(cols, axis=1)


def factor_values(samples: dict, rows: np.ndarray) -> dict[str, np.ndarray]:
    out = {}
    for f in FACTORS:
        if f == "age_z":
            out[f] = (np.asarray(samples["age"], np.float64)[rows] - 64.0) / 15.0
        elif f in samples:
            out[f] = np.asarray(samples[f], np.float64)[rows]
    return out


def read_pixels(world: Path, paths: list[str]) -> np.ndarray:
    """(N, P) gray pixels in [0, 1] of the world's PNGs."""
    return np.stack([np.asarray(Image.open(world / p), np.float32).reshape(-1) / 255.0 for p in paths])


def ridge_fit_predict(x_train, y_train, x_eval):
    """StandardScaler + RidgeCV (efficient leave-one-out on the training rows) -> predictions on x_eval."""
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 5, 15)))
    return model.fit(x_train, y_train).predict(x_eval)


def r2(y_true, y_pred) -> float:
    """Variance-weighted R^2 over the columns (sklearn's multioutput='variance_weighted')."""
    from sklearn.metrics import r2_score
    y_true, y_pred = np.asarray(y_true).reshape(len(y_true), -1), np.asarray(y_pred).reshape(len(y_pred), -1)
    return float(r2_score(y_true, y_pred, multioutput="variance_weighted"))


def batch_retrieval(pred: np.ndarray, target: np.ndarray, center: np.ndarray, batch: int = RETRIEVAL_BATCH):
    """In-batch top-1 / top-5 of target row i for query pred row i, in consecutive blocks of `batch` rows (a last
    partial block is dropped, as a drop-last loader), by cosine after subtracting `center`. Returns (top1, top5,
    n_queries)."""
    hits1, hits5, n = 0, 0, 0
    for lo in range(0, len(pred) - batch + 1, batch):
        a = pred[lo:lo + batch] - center
        b = target[lo:lo + batch] - center
        a = a / (np.linalg.norm(a, axis=1, keepdims=True) + 1e-8)
        b = b / (np.linalg.norm(b, axis=1, keepdims=True) + 1e-8)
        sim = a @ b.T  # (batch, batch)
        rank = (sim > sim.diagonal()[:, None]).sum(axis=1)  # rows scoring above the true match
        hits1, hits5, n = hits1 + int((rank == 0).sum()), hits5 + int((rank < 5).sum()), n + batch
    return (hits1 / n, hits5 / n, n) if n else (float("nan"), float("nan"), 0)


def _inv_sqrt(c: np.ndarray, shrink: float) -> np.ndarray:
    c = (1 - shrink) * c + shrink * np.trace(c) / len(c) * np.eye(len(c))  # shrink towards a scaled identity
    w, v = np.linalg.eigh(c)
    return (v / np.sqrt(np.maximum(w, 1e-12))) @ v.T


def cca(x_train, y_train, x_eval, y_eval, k: int = CCA_K, shrink: float = CCA_SHRINK):
    """Regularised CCA fitted on the training rows -> (canonical variates of x_eval and y_eval, each (N, k), weighted
    by sqrt of the training canonical correlations; the validation correlation of each of the k pairs)."""
    mx, my = x_train.mean(0), y_train.mean(0)
    xc, yc = x_train - mx, y_train - my
    n = len(xc)
    wx, wy = _inv_sqrt(xc.T @ xc / n, shrink), _inv_sqrt(yc.T @ yc / n, shrink)
    u, s, vt = np.linalg.svd(wx @ (xc.T @ yc / n) @ wy)
    a, b = wx @ u[:, :k], wy @ vt[:k].T
    scale = np.sqrt(np.maximum(s[:k], 0))
    xa, yb = (x_eval - mx) @ a, (y_eval - my) @ b
    corr = [float(np.corrcoef(xa[:, j], yb[:, j])[0, 1]) for j in range(xa.shape[1])]
    return xa * scale, yb * scale, corr


def pixel_components(x_train, x_eval, n: int = PIXEL_PCS):
    """The first n principal components of the pixels (fitted on the training rows) of both sets."""
    from sklearn.decomposition import PCA
    pca = PCA(min(n, *x_train.shape), random_state=0).fit(x_train)
    return pca.transform(x_train), pca.transform(x_eval)


def logistic_auroc(x_train, y_train, x_eval, y_eval, pca: int = 0) -> float:
    """Validation AUROC of StandardScaler (+ PCA) + LogisticRegressionCV (3-fold on the training rows)."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    import warnings
    if len(np.unique(y_train)) < 2 or len(np.unique(y_eval)) < 2:
        return float("nan")
    warnings.filterwarnings("ignore", category=FutureWarning, module="sklearn")  # LogisticRegressionCV API notices
    steps = [StandardScaler()] + ([PCA(min(pca, *x_train.shape), random_state=0)] if pca else [])
    model = make_pipeline(*steps, LogisticRegressionCV(Cs=np.logspace(-4, 2, 7), cv=3, max_iter=3000,
                                                       scoring="roc_auc"))
    model.fit(x_train, y_train)
    return float(roc_auc_score(y_eval, model.predict_proba(x_eval)[:, 1]))


def teacher_embeddings(world: Path, labs_dae: str | None, ecg_weights: str | None, cache: Path,
                       device: str = "cpu") -> dict[str, dict[str, np.ndarray]]:
    """{split: {'labs': (N, 256), 'ecg': (N, E) or absent, 'hadm_id': (N,)}} for train and val, through the same
    function (and cache) as train_distill.py's Stage-2 targets."""
    import torch
    from pacx.data.targets import symile_targets
    out = {}
    for split in ("train", "val"):
        d = world / "data_npy" / split
        t = symile_targets(d, split, ecg_weights, labs_dae, cache, torch.device(device), with_ecg=bool(ecg_weights))
        out[split] = {"labs": t["labs"].numpy(), "hadm_id": np.load(d / f"hadm_id_{split}.npy")}
        if ecg_weights:
            out[split]["ecg"] = t["ecg"].numpy()
    return out


def cls_features(path: str, pixels: np.ndarray, size: int, model: str = "tiny") -> np.ndarray:
    """(N, D) CLS features of a backbone checkpoint ('' = random init of `model`) on gray pixels (N, size * size) in
    [0, 1], fed as evaluate.py feeds the PNGs (three channels, ImageNet-normalised, the backbone's input size)."""
    import torch
    import torch.nn.functional as F

    from pacx.data.transforms import IMAGENET_MEAN, IMAGENET_STD
    from pacx.weights import load_backbone

    torch.manual_seed(0)
    backbone, _ = load_backbone(path, model, img_size=size if not path else 0)
    backbone.eval()
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    out = []
    with torch.no_grad():
        for lo in range(0, len(pixels), 256):
            x = torch.from_numpy(pixels[lo:lo + 256]).view(-1, 1, size, size).expand(-1, 3, -1, -1)
            x = F.interpolate(x, size=backbone.cfg.img_size, mode="bilinear", antialias=True) \
                if backbone.cfg.img_size != size else x
            out.append(backbone((x - mean) / std).numpy())
    return np.concatenate(out)


def backbone_report(backbones: dict[str, str], pix: dict, fac: dict, emb: dict, labels: dict, size: int,
                    log=print) -> dict:
    """For each backbone: validation R^2 from its CLS features to each factor and teacher embedding, and validation
    AUROC of a logistic regression to each label (fitted on the training split)."""
    out = {}
    for name, path in backbones.items():
        f = {k: cls_features(path, pix[k], size) for k in ("train", "val")}
        entry = {"factors": {k: r2(fac["val"][k], ridge_fit_predict(f["train"], fac["train"][k], f["val"]))
                             for k in fac["train"]},
                 "embeddings": {m: r2(emb["val"][m], ridge_fit_predict(f["train"], emb["train"][m], f["val"]))
                                for m in ("labs", "ecg") if emb and m in emb["train"]},
                 "labels": {k: logistic_auroc(f["train"], y["train"], f["val"], y["val"]) for k, y in labels.items()}}
        out[name] = entry
        log(f"oracle: backbone {name}: " + ", ".join(f"{k} R2 {v:.3f}" for k, v in entry["factors"].items()))
    return out


def oracle_report(world: Path, labs_dae: str | None, ecg_weights: str | None, cache: Path, log=print,
                  batch: int = RETRIEVAL_BATCH, backbones: dict[str, str] | None = None) -> dict:
    t0 = time.perf_counter()
    meta = json.loads((world / "world.json").read_text())
    s = meta["samples"]
    split = np.array(s["split"])
    rows = {k: np.flatnonzero(split == k) for k in ("train", "val")}
    if not len(rows["train"]) or not len(rows["val"]):
        raise PacxError(f"{world}: the oracle needs a train and a val split")
    import pandas as pd
    images = pd.read_csv(world / "images.csv")
    pix = {k: read_pixels(world, images["path"].iloc[r].tolist()) for k, r in rows.items()}
    lat = {k: _latent_matrix(s, r) for k, r in rows.items()}
    fac = {k: factor_values(s, r) for k, r in rows.items()}
    emb = teacher_embeddings(world, labs_dae, ecg_weights, cache) if labs_dae or ecg_weights else {}
    hadm = np.asarray(s["hadm_id"])
    for k in emb:
        if not np.array_equal(emb[k]["hadm_id"], hadm[rows[k]]):
            raise PacxError(f"{world}: data_npy/{k} rows are not in world.json order")
    log(f"oracle: {len(rows['train'])} train / {len(rows['val'])} val patients, {pix['train'].shape[1]} pixels, "
        f"teachers {[m for m in ('labs', 'ecg') if emb and m in emb['train']]}")

    report = {"fit_split": "train", "scored_split": "val", "n_train": int(len(rows["train"])),
              "n_val": int(len(rows["val"])), "retrieval_batch": batch,
              "retrieval_chance": {"top1": 1 / batch, "top5": min(5, batch) / batch},
              "embeddings": {}, "labels": {}, "factors": {}}
    teachers = [m for m in ("labs", "ecg") if emb and m in emb["train"]]
    pcs = dict(zip(("train", "val"), pixel_components(pix["train"], pix["val"])))
    for m in teachers:
        y_tr, y_va = emb["train"][m], emb["val"][m]
        center = y_tr.mean(0)
        entry = {"dim": int(y_tr.shape[1])}
        for src, x in (("latent", lat), ("pixels", pix)):
            pred = ridge_fit_predict(x["train"], y_tr, x["val"])
            top1, top5, n = batch_retrieval(pred, y_va, center, batch)
            entry |= {f"r2_{src}": r2(y_va, pred), f"top1_{src}": top1, f"top5_{src}": top5}
        entry["n_queries"] = n
        xa, yb, corr = cca(pcs["train"], y_tr, pcs["val"], y_va)
        top1, top5, _ = batch_retrieval(xa, yb, np.zeros(xa.shape[1]), batch)
        entry |= {"cca_val_correlations": corr, "top1_cca_pixels": top1, "top5_cca_pixels": top5}
        # how alike the targets are: mean pairwise cosine of raw targets (a collapsed teacher is near 1)
        a = y_va / (np.linalg.norm(y_va, axis=1, keepdims=True) + 1e-8)
        entry["mean_pair_cosine"] = float((a @ a.T).mean())
        report["embeddings"][m] = entry
        log(f"oracle: {m} embedding done ({time.perf_counter() - t0:.0f} s)")
    for name in meta["label_names"]:
        y = np.asarray(s[name])
        ytr, yva = y[rows["train"]], y[rows["val"]]
        entry = {"prevalence_val": float(yva.mean()),
                 "auroc_latent": logistic_auroc(lat["train"], ytr, lat["val"], yva),
                 "auroc_pixels": logistic_auroc(pcs["train"], ytr, pcs["val"], yva)}
        for m in teachers:
            entry[f"auroc_{m}_embedding"] = logistic_auroc(emb["train"][m], ytr, emb["val"][m], yva)
        report["labels"][name] = entry
    log(f"oracle: labels done ({time.perf_counter() - t0:.0f} s)")
    names = list(fac["train"])
    both = {k: np.stack([fac[k][f] for f in names], axis=1) for k in fac}  # (N, factors): one ridge fit for all
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    pred = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 5, 15), alpha_per_target=True)).fit(
        pix["train"], both["train"]).predict(pix["val"])
    for j, f in enumerate(names):
        entry = {"r2_pixels": r2(both["val"][:, j], pred[:, j])}
        for m in teachers:
            entry[f"r2_{m}_embedding"] = r2(fac["val"][f], ridge_fit_predict(emb["train"][m], fac["train"][f],
                                                                              emb["val"][m]))
        report["factors"][f] = entry
    if backbones:
        labels = {k: {sp: np.asarray(s[k])[r] for sp, r in rows.items()} for k in meta["label_names"]}
        report["backbones"] = backbone_report(backbones, pix, fac, emb, labels, int(meta["image_size"]), log)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    return report


def markdown(report: dict) -> str:
    def f(v):
        return "-" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.3f}"

    teachers = list(report["embeddings"])
    lines = [f"Oracle (linear models fitted on train n={report['n_train']}, scored on val n={report['n_val']})", ""]
    if teachers:
        lines += ["| embedding | dim | R2 latent | R2 pixels | top-1 latent | top-1 pixels | top-5 pixels | "
                  "top-1 CCA pixels | top-5 CCA pixels | CCA val corr (first 3) | mean pair cos |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for m, e in report["embeddings"].items():
            cc = ", ".join(f"{c:.2f}" for c in e["cca_val_correlations"][:3])
            lines.append(f"| {m} | {e['dim']} | {f(e['r2_latent'])} | {f(e['r2_pixels'])} | {f(e['top1_latent'])} | "
                         f"{f(e['top1_pixels'])} | {f(e['top5_pixels'])} | {f(e['top1_cca_pixels'])} | "
                         f"{f(e['top5_cca_pixels'])} | {cc} | {f(e['mean_pair_cosine'])} |")
        lines += [f"(retrieval among {report['retrieval_batch']}: chance top-1 "
                  f"{report['retrieval_chance']['top1']:.3f}, top-5 {report['retrieval_chance']['top5']:.3f})", ""]
    cols = ["latent", "pixels"] + [f"{m}_embedding" for m in teachers]
    lines += ["| label | prevalence | " + " | ".join(f"AUROC {c}" for c in cols) + " |",
              "|---" * (len(cols) + 2) + "|"]
    for name, e in report["labels"].items():
        lines.append(f"| {name} | {f(e['prevalence_val'])} | " + " | ".join(f(e[f'auroc_{c}']) for c in cols) + " |")
    cols = ["pixels"] + [f"{m}_embedding" for m in teachers]
    lines += ["", "| factor | " + " | ".join(f"R2 {c}" for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, e in report["factors"].items():
        lines.append(f"| {name} | " + " | ".join(f(e[f'r2_{c}']) for c in cols) + " |")
    if report.get("backbones"):
        first = next(iter(report["backbones"].values()))
        cols = [f"R2 {k}" for k in first["factors"]] + [f"R2 {k} emb." for k in first["embeddings"]] + \
               [f"AUROC {k}" for k in first["labels"]]
        lines += ["", "What each backbone's CLS token encodes (linear, validation):", "",
                  "| backbone | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
        for name, e in report["backbones"].items():
            values = [*e["factors"].values(), *e["embeddings"].values(), *e["labels"].values()]
            lines.append(f"| {name} | " + " | ".join(f(v) for v in values) + " |")
    return "\n".join(lines)


@dataclass
class Config:
    world: str = opt("", "world folder written by pacx.world.make (world.json, images.csv, data_npy/)")
    labs_dae: str = opt("", "lab DAE checkpoint (train_labs.py); '' = no lab embedding")
    ecg_weights: str = opt("", "ECG teacher checkpoint (pacx.world.ecg_teacher); '' = no ECG embedding")
    targets_cache: str = opt("", "folder of the cached targets (default: <world>/../targets, train_distill's)")
    out: str = opt("", "report file (default: oracle.json beside world.json)")
    retrieval_batch: int = opt(RETRIEVAL_BATCH, "rows per in-batch retrieval block (Stage 2's batch size)")
    backbones: tuple[str, ...] = opt((), "name=checkpoint of image encoders whose CLS features are also measured "
                                         "(empty checkpoint: random init of the tiny ViT), comma-separated")


@exit_on_error
def main(argv=None):
    cfg = parse_config(Config, argv, __doc__)
    if not cfg.world:
        raise PacxError("--world is required")
    world = Path(cfg.world)
    cache = Path(cfg.targets_cache) if cfg.targets_cache else world.parent / "targets"
    backbones = dict(b.split("=", 1) for b in cfg.backbones if "=" in b)
    if len(backbones) != len(cfg.backbones):
        raise PacxError(f"--backbones: expected name=checkpoint entries, got {','.join(cfg.backbones)}")
    report = oracle_report(world, cfg.labs_dae or None, cfg.ecg_weights or None, cache, batch=cfg.retrieval_batch,
                           backbones=backbones)
    out = Path(cfg.out) if cfg.out else world / "oracle.json"
    out.write_text(json.dumps(report, indent=1))
    print(markdown(report))
    print(f"oracle: written to {out} in {report['seconds']} s", flush=True)


if __name__ == "__main__":
    main()
