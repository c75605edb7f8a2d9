# Reference values for syndesmo's lme4 reflexes (tests/fitting/test_reflexes.py):
# ranef(condVar = TRUE), fitted, residuals, predict on new data with an unseen group
# (allow.new.levels = TRUE) and without random effects (re.form = NA), with and
# without an offset, and the likelihood-ratio table of anova(m0, m1).
#
# Input: tests/references/data/vu.csv (written by make_references.R) and new_rows.csv
# (written here: five rows, patient P999 is not in the data).
# Fits are Laplace and 15-point adaptive quadrature with a tight PIRLS tolerance
# (glmerControl(tolPwrss = 1e-12)); see tests/references/README.md for why.
#
# Run from the repository root:  Rscript tests/references/reflexes/reflexes.R

suppressPackageStartupMessages({
  library(lme4)
  library(mlmRev)
})
here <- "tests/references/reflexes"
d <- read.csv("tests/references/data/vu.csv", stringsAsFactors = TRUE)
tight <- glmerControl(tolPwrss = 1e-12)

new <- data.frame(
  patient = c("P001", "P002", "P999", "P999", "P010"),
  vu = c("C2/3", "L1/2", "C5/6", "L4/5", "T12/L1"),
  mri = c(1, 0, 1, 0, 1),
  arm = c("infliximab", "placebo", "placebo", "infliximab", "placebo"),
  region = c("cervical", "lumbar", "cervical", "lumbar", "lumbar"),
  msasss_baseline = c(9, 0, 30, 2.5, 12)
)
write.csv(new, file.path(here, "new_rows.csv"), row.names = FALSE)
new <- read.csv(file.path(here, "new_rows.csv"), stringsAsFactors = FALSE)

w <- function(x, name) write.csv(x, file.path(here, name), row.names = FALSE)
num <- function(x) ifelse(is.na(x), NA, trimws(formatC(x, digits = 15, format = "g")))

cases <- list(
  vu = new_syndesmophyte ~ mri + arm + region + scale(msasss_baseline) + (1 | patient),
  vu_offset = new_syndesmophyte ~ mri + arm + offset(msasss_baseline / 20) + (1 | patient)
)
for (case in names(cases)) {
  for (nagq in c(1, 15)) {
    m <- glmer(cases[[case]], data = d, family = binomial, nAGQ = nagq, control = tight)
    tag <- sprintf("%s_agq%d", case, nagq)
    est <- data.frame(
      name = c(names(fixef(m)), "sigma", "logLik"),
      value = num(c(unname(fixef(m)), sqrt(VarCorr(m)[[1]][1, 1]), as.numeric(logLik(m))))
    )
    w(est, sprintf("%s_estimates.csv", tag))
    re <- as.data.frame(ranef(m, condVar = TRUE))
    re$condval <- num(re$condval)
    re$condsd <- num(re$condsd)
    w(re, sprintf("%s_ranef.csv", tag))
    w(data.frame(
      response = num(fitted(m)),
      link = num(predict(m, type = "link")),
      deviance = num(residuals(m, type = "deviance")),
      pearson = num(residuals(m, type = "pearson")),
      resid_response = num(residuals(m, type = "response"))
    ), sprintf("%s_fitted.csv", tag))
    w(data.frame(
      response = num(predict(m, newdata = new, type = "response", allow.new.levels = TRUE)),
      link = num(predict(m, newdata = new, type = "link", allow.new.levels = TRUE)),
      fixed_response = num(predict(m, newdata = new, type = "response", re.form = NA)),
      fixed_link = num(predict(m, newdata = new, type = "link", re.form = NA))
    ), sprintf("%s_predict.csv", tag))
  }
}

# anova: nested fixed effects (m0 in m1), both by nAGQ = 15
m0 <- glmer(new_syndesmophyte ~ mri + (1 | patient), data = d, family = binomial,
            nAGQ = 15, control = tight)
m1 <- glmer(new_syndesmophyte ~ mri + arm + region + (1 | patient), data = d,
            family = binomial, nAGQ = 15, control = tight)
a <- as.data.frame(anova(m0, m1))
out <- data.frame(model = c("m0", "m1"), npar = a$npar, AIC = num(a$AIC), BIC = num(a$BIC),
                  logLik = num(a$logLik), deviance = num(a$deviance),
                  Chisq = num(a$Chisq), Df = a$Df, p = num(a[["Pr(>Chisq)"]]))
w(out, "anova_fixed.csv")

# a variance component: glm (no random intercept) against the Laplace glmer; R's anova
# gives the naive chi-square(1) p; the boundary-corrected p is the 50:50 mixture of
# chi-square(1) and chi-square(0) (Self & Liang 1987).
g0 <- glm(new_syndesmophyte ~ mri + arm, data = d, family = binomial,
          control = glm.control(epsilon = 1e-14))
g1 <- glmer(new_syndesmophyte ~ mri + arm + (1 | patient), data = d, family = binomial,
            nAGQ = 1, control = tight)
a <- as.data.frame(anova(g1, g0))
out <- data.frame(model = c("g0", "g1"), npar = a$npar, AIC = num(a$AIC), BIC = num(a$BIC),
                  logLik = num(a$logLik), deviance = num(a$deviance),
                  Chisq = num(a$Chisq), Df = a$Df, p = num(a[["Pr(>Chisq)"]]),
                  p_boundary = num(c(NA, 0.5 * pchisq(a$Chisq[2], 1, lower.tail = FALSE))))
w(out, "anova_variance.csv")

# --- nested and slope random effects (mlmRev's Contraception) ----------------------------
# predict must work from the formula and lme4's ranef table alone, whatever the bars:
# (1 | district/urban) gives groups district and urban:district (labels "Y:1"),
# (urban | district) a correlated intercept and slope. Compared at R's estimates (lme4
# warns that the gradient check of these fits is above its tolerance; the predictions
# are compared given the estimates and modes R reports, so that does not matter).
cd <- Contraception
contra <- data.frame(use = as.integer(cd$use == "Y"), age = cd$age,
                     urban = as.character(cd$urban), ch = as.integer(cd$livch != "0"),
                     district = as.character(cd$district))
write.csv(contra, file.path(here, "contraception.csv"), row.names = FALSE)
contra <- read.csv(file.path(here, "contraception.csv"), stringsAsFactors = FALSE)
contra_new <- data.frame(age = c(-5.5, 10.4, 0, 3.2), urban = c("Y", "N", "Y", "N"),
                         ch = c(1L, 0L, 1L, 1L), district = c("1", "2", "999", "60"))
write.csv(contra_new, file.path(here, "contraception_new.csv"), row.names = FALSE)
contra_new <- read.csv(file.path(here, "contraception_new.csv"), stringsAsFactors = FALSE)
ml <- list(
  nested = use ~ age + I(age^2) + urban + ch + (1 | district/urban),
  slope = use ~ age + I(age^2) + urban + ch + (urban | district)
)
for (case in names(ml)) {
  m <- glmer(ml[[case]], data = contra, family = binomial, control = tight)
  tag <- sprintf("contraception_%s", case)
  w(data.frame(name = names(fixef(m)), value = num(unname(fixef(m)))),
    sprintf("%s_estimates.csv", tag))
  re <- as.data.frame(ranef(m, condVar = TRUE))
  re$condval <- num(re$condval)
  re$condsd <- num(re$condsd)
  w(re, sprintf("%s_ranef.csv", tag))
  w(data.frame(link = num(predict(m, type = "link")), response = num(fitted(m))),
    sprintf("%s_fitted.csv", tag))
  w(data.frame(
    response = num(predict(m, newdata = contra_new, type = "response", allow.new.levels = TRUE)),
    link = num(predict(m, newdata = contra_new, type = "link", allow.new.levels = TRUE))
  ), sprintf("%s_predict.csv", tag))
}

# --- binomial counts: glmer(cbind(incidence, size - incidence) ~ period + (1 | herd)) ------
# residuals of a binomial count are those of the proportion with prior weights = trials
cbf <- read.csv("tests/references/data/cbpp.csv")
cbf$period <- factor(cbf$period)
m <- glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), data = cbf,
           family = binomial, control = tight)
w(data.frame(name = c(names(fixef(m)), "sigma"),
             value = num(c(unname(fixef(m)), sqrt(VarCorr(m)[[1]][1, 1])))),
  "cbpp_estimates.csv")
w(data.frame(response = num(fitted(m)), deviance = num(residuals(m, type = "deviance")),
             pearson = num(residuals(m, type = "pearson")),
             resid_response = num(residuals(m, type = "response"))),
  "cbpp_fitted.csv")

# --- a count model: Poisson glm of cbpp's incidence with offset(log(size)) ---------------
cb <- read.csv("tests/references/data/cbpp.csv")
pm <- glm(incidence ~ factor(period) + offset(log(size)), family = poisson, data = cb,
          control = glm.control(epsilon = 1e-14))
w(data.frame(response = num(fitted(pm)), link = num(predict(pm, type = "link")),
             deviance = num(residuals(pm, type = "deviance")),
             pearson = num(residuals(pm, type = "pearson")),
             resid_response = num(residuals(pm, type = "response"))),
  "poisson_cbpp_fitted.csv")

writeLines(sprintf("Made by reflexes.R with %s; lme4 %s, Matrix %s, mlmRev %s.", R.version.string,
                   packageVersion("lme4"), packageVersion("Matrix"), packageVersion("mlmRev")),
           file.path(here, "VERSIONS.txt"))
