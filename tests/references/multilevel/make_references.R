# Reference fits of the multilevel cases by lme4 (Laplace, tolPwrss = 1e-12) and glmmTMB.
# lme4's default optimiser settings can stop short of the maximum (its own convergence
# check says so on two of the cases), so each case is also fitted with bobyqa at
# rhoend = 1e-10 ("lme4_tight").
#
# Run from the repository root:
#   python tests/references/multilevel/make_data.py     # writes vu_readers/data.csv
#   Rscript tests/references/multilevel/make_references.R [case ...]
# Writes tests/references/multilevel/<case>/reference.json. The data and formulas are
# those of tests/multilevel_cases.py (public data sets from mlmRev, the same transforms).
suppressMessages({
  library(lme4)
  library(glmmTMB)
  library(mlmRev)
  library(jsonlite)
})

here <- "tests/references/multilevel"

contraception <- function() {
  d <- Contraception
  data.frame(use = as.integer(d$use == "Y"), age = d$age, age2 = d$age^2,
             urban = as.character(d$urban), ch = as.integer(d$livch != "0"),
             livch = as.character(d$livch),
             district = d$district)
}
guimmun <- function() {
  d <- guImmun
  out <- d[, c("kid2p", "mom25p", "ord", "ethn", "momEd", "husEd", "momWork", "rural")]
  out[] <- lapply(out, as.character)
  out$pcInd81 <- d$pcInd81
  out$immun <- as.integer(d$immun == "Y")
  out$mom <- d$mom
  out$comm <- d$comm
  out
}
vu_readers <- function() {
  d <- read.csv(file.path(here, "vu_readers", "data.csv"))
  d$patient <- factor(d$patient)
  d$vu <- factor(d$vu)
  d
}

cases <- list(
  contraception_nested = list(contraception, use ~ age + age2 + urban + ch + (1 | district/urban)),
  contraception_slope = list(contraception, use ~ age + age2 + urban + ch + (urban | district)),
  contraception_crossed = list(contraception, use ~ age + ch + (1 | district) + (1 | livch)),
  guimmun = list(guimmun, immun ~ kid2p + mom25p + ord + ethn + momEd + husEd + momWork +
                   rural + pcInd81 + (1 | comm/mom)),
  vu_readers = list(vu_readers, y ~ mri + arm + reader + (1 | patient/vu))
)

tmb_varcorr <- function(m) {
  vc <- VarCorr(m)$cond
  rows <- list()
  for (g in names(vc)) {
    s <- vc[[g]]
    sd <- attr(s, "stddev")
    co <- attr(s, "correlation")
    nm <- names(sd)
    for (a in seq_along(sd)) rows[[length(rows) + 1]] <- list(grp = g, var1 = nm[a], var2 = NA,
                                                              vcov = sd[a]^2, sdcor = sd[a])
    if (length(sd) > 1) for (a in 1:(length(sd) - 1)) for (b in (a + 1):length(sd))
      rows[[length(rows) + 1]] <- list(grp = g, var1 = nm[a], var2 = nm[b],
                                       vcov = s[a, b], sdcor = co[a, b])
  }
  do.call(rbind, lapply(rows, as.data.frame))
}

only <- commandArgs(trailingOnly = TRUE)  # case names; none: all cases
for (case in if (length(only)) only else names(cases)) {
  d <- cases[[case]][[1]]()
  f <- cases[[case]][[2]]
  t0 <- proc.time()[["elapsed"]]
  m <- glmer(f, data = d, family = binomial, control = glmerControl(tolPwrss = 1e-12))
  t_lme4 <- proc.time()[["elapsed"]] - t0
  t0 <- proc.time()[["elapsed"]]
  m2 <- glmer(f, data = d, family = binomial,
              control = glmerControl(tolPwrss = 1e-12, optimizer = "bobyqa",
                                     optCtrl = list(rhoend = 1e-10, maxfun = 1e5)))
  t_tight <- proc.time()[["elapsed"]] - t0
  t0 <- proc.time()[["elapsed"]]
  mt <- glmmTMB(f, data = d, family = binomial)
  t_tmb <- proc.time()[["elapsed"]] - t0
  vc <- as.data.frame(VarCorr(m))
  out <- list(
    case = case,
    formula = paste(deparse(f, width.cutoff = 500), collapse = " "),
    n_obs = nrow(d),
    n_events = sum(model.response(model.frame(m))),
    R = R.version.string,
    lme4 = list(
      version = as.character(packageVersion("lme4")),
      control = "glmerControl(tolPwrss = 1e-12)",
      fixef_names = names(fixef(m)),
      fixef = unname(fixef(m)),
      se = unname(sqrt(diag(as.matrix(vcov(m))))),
      theta = unname(getME(m, "theta")),
      theta_names = names(getME(m, "theta")),
      varcorr = vc,
      loglik = as.numeric(logLik(m)),
      seconds = t_lme4,
      messages = m@optinfo$conv$lme4$messages
    ),
    lme4_tight = list(
      control = "glmerControl(tolPwrss = 1e-12, optimizer = 'bobyqa', optCtrl = list(rhoend = 1e-10, maxfun = 1e5))",
      fixef = unname(fixef(m2)),
      se = unname(sqrt(diag(as.matrix(vcov(m2))))),
      theta = unname(getME(m2, "theta")),
      varcorr = as.data.frame(VarCorr(m2)),
      loglik = as.numeric(logLik(m2)),
      seconds = t_tight,
      messages = m2@optinfo$conv$lme4$messages
    ),
    glmmTMB = list(
      version = as.character(packageVersion("glmmTMB")),
      fixef = unname(fixef(mt)$cond),
      se = unname(sqrt(diag(vcov(mt)$cond))),
      varcorr = tmb_varcorr(mt),
      loglik = as.numeric(logLik(mt)),
      seconds = t_tmb
    )
  )
  dir.create(file.path(here, case), showWarnings = FALSE)
  writeLines(toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE, na = "null"),
             file.path(here, case, "reference.json"))
  cat(case, "lme4", as.numeric(logLik(m)), "tight", as.numeric(logLik(m2)), "glmmTMB",
      as.numeric(logLik(mt)), "\n")
}
