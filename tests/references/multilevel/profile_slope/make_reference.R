# Profile-likelihood intervals of the SDs of a correlated random slope by lme4: the
# reference of tests/fitting/test_profile_nested.py (slope case). Run from the
# repository root:
#   Rscript tests/references/multilevel/profile_slope/make_reference.R
# Data: mlmRev's Contraception as tests/multilevel_cases.py prepares it.
suppressMessages({library(lme4); library(mlmRev); library(jsonlite)})
here <- "tests/references/multilevel/profile_slope"
d <- Contraception
d <- data.frame(use = as.integer(d$use == "Y"), age = d$age, age2 = d$age^2,
                urban = as.character(d$urban), ch = as.integer(d$livch != "0"),
                district = d$district)
m <- glmer(use ~ age + age2 + urban + ch + (urban | district), data = d, family = binomial,
           control = glmerControl(tolPwrss = 1e-12, optimizer = "bobyqa",
                                  optCtrl = list(rhoend = 1e-10, maxfun = 1e5)))
ci <- confint(m, parm = "theta_", method = "profile", level = 0.95, oldNames = FALSE)
vc <- as.data.frame(VarCorr(m))
out <- list(
  formula = "use ~ age + age2 + urban + ch + (urban | district)",
  R = R.version.string, lme4 = as.character(packageVersion("lme4")),
  loglik = as.numeric(logLik(m)), sdcor = vc$sdcor,
  rows = rownames(ci), lower = unname(ci[, 1]), upper = unname(ci[, 2])
)
writeLines(toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE),
           file.path(here, "reference.json"))
