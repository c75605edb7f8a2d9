# Profile-likelihood intervals of a nested fit by lme4, the reference of
# tests/fitting/test_profile_nested.py. Run from the repository root:
#   Rscript tests/references/multilevel/profile_nested/make_reference.R
# data.csv is simulate_vu_readers(n_patients = 80, seed = 5) of tests/multilevel_cases.py.
suppressMessages({library(lme4); library(jsonlite)})
here <- "tests/references/multilevel/profile_nested"
d <- read.csv(file.path(here, "data.csv"))
d$patient <- factor(d$patient); d$vu <- factor(d$vu)
m <- glmer(y ~ mri + arm + reader + (1 | patient/vu), data = d, family = binomial,
           control = glmerControl(tolPwrss = 1e-12, optimizer = "bobyqa",
                                  optCtrl = list(rhoend = 1e-10, maxfun = 1e5)))
ci <- confint(m, method = "profile", level = 0.95)
vc <- as.data.frame(VarCorr(m))
out <- list(
  formula = "y ~ mri + arm + reader + (1 | patient/vu)",
  R = R.version.string, lme4 = as.character(packageVersion("lme4")),
  fixef = unname(fixef(m)), loglik = as.numeric(logLik(m)),
  sd_grp = as.character(vc$grp), sd = vc$sdcor,
  rows = rownames(ci), lower = unname(ci[, 1]), upper = unname(ci[, 2])
)
writeLines(toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE),
           file.path(here, "reference.json"))
