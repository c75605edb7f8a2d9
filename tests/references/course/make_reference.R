# Reference fit of the MRI course model by lme4 (Laplace, tolPwrss = 1e-12):
#   glmer(inflamed ~ factor(week) * arm + (1 | patient/vu), family = binomial)
# with placebo as the reference arm and week 0 as the reference week, on data.csv
# (written by make_data.py). lme4's default PIRLS tolerance can stop short of the
# maximum, so it runs at tolPwrss = 1e-12; a second fit with bobyqa at rhoend = 1e-10
# checks that the optimiser reached the maximum (the test compares with the first).
#
# Run from the repository root:
#   python tests/references/course/make_data.py
#   Rscript tests/references/course/make_reference.R
# Writes tests/references/course/reference.json.
suppressMessages({
  library(lme4)
  library(jsonlite)
})

here <- "tests/references/course"
d <- read.csv(file.path(here, "data.csv"))
d$patient <- factor(d$patient)
d$vu <- factor(d$vu)
d$week <- factor(d$week, levels = sort(unique(d$week)))
d$arm <- relevel(factor(d$arm), ref = "placebo")
f <- inflamed ~ week * arm + (1 | patient/vu)

fit_one <- function(control) {
  m <- glmer(f, data = d, family = binomial, control = control)
  vc <- as.data.frame(VarCorr(m))
  list(
    coef = as.list(fixef(m)),
    se = as.list(sqrt(diag(as.matrix(vcov(m))))),
    vcov = unname(as.matrix(vcov(m))),
    varcorr = list(grp = vc$grp, sdcor = vc$sdcor, vcov = vc$vcov),
    loglik = as.numeric(logLik(m)),
    singular = isSingular(m),
    messages = as.list(m@optinfo$conv$lme4$messages)
  )
}

t0 <- proc.time()[["elapsed"]]
laplace <- fit_one(glmerControl(tolPwrss = 1e-12))
seconds <- proc.time()[["elapsed"]] - t0
tight <- fit_one(glmerControl(tolPwrss = 1e-12, optimizer = "bobyqa",
                              optCtrl = list(rhoend = 1e-10, maxfun = 1e5)))

out <- list(
  case = "course",
  call = "glmer(inflamed ~ factor(week) * arm + (1 | patient/vu), family = binomial, nAGQ = 1, control = glmerControl(tolPwrss = 1e-12))",
  n_obs = nrow(d),
  lme4 = laplace,
  lme4_bobyqa = tight,
  seconds = seconds,
  versions = list(R = R.version.string, lme4 = as.character(packageVersion("lme4")))
)
writeLines(toJSON(out, auto_unbox = TRUE, digits = I(15), pretty = TRUE),
           file.path(here, "reference.json"))
