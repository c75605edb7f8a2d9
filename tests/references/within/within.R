# Reference values for syndesmo's within-patient step (tests/analysis/test_within.py).
#
# On a confounded simulated VU frame (vu_frame.csv, written by make_frame.py):
#  * the within/between split of mri by patient, from base R's ave();
#  * the hybrid (within-between) GLMM by lme4::glmer, Laplace (nAGQ = 1, as the
#    ladder's default native fit) and 15-point adaptive quadrature, with
#    glmerControl(tolPwrss = 1e-12) (lme4's default PIRLS tolerance stops short);
#  * the Wald test of within = between from vcov(m) (contrast c(0, 1, -1, 0));
#  * conditional logistic regression by survival::clogit, method = "exact".
#
# Run from the repository root:  Rscript tests/references/within/within.R
# Made with R 4.2.2, lme4 1.1-31, survival 3.5-3 (Debian 12).

library(lme4)
library(survival)
here <- "tests/references/within"
d <- read.csv(file.path(here, "vu_frame.csv"))
d$mri_between <- ave(d$mri, d$patient)
d$mri_within <- d$mri - d$mri_between
write.csv(d[, c("patient", "mri_within", "mri_between")],
          file.path(here, "within_between.csv"), row.names = FALSE)

rows <- list()
add <- function(case, quantity, term, value) {
  rows[[length(rows) + 1]] <<- data.frame(case = case, quantity = quantity, term = term,
                                          value = value)
}
for (q in c(1, 15)) {
  case <- sprintf("hybrid_nagq%d", q)
  m <- glmer(new_syndesmophyte ~ mri_within + mri_between + infliximab + (1 | patient),
             data = d, family = binomial, nAGQ = q,
             control = glmerControl(tolPwrss = 1e-12))
  b <- fixef(m)
  V <- as.matrix(vcov(m))
  add(case, "estimate", names(b), unname(b))
  add(case, "se", names(b), unname(sqrt(diag(V))))
  k <- c(0, 1, -1, 0)
  diff <- sum(k * b)
  se <- sqrt(drop(t(k) %*% V %*% k))
  add(case, c("difference", "difference_se", "p_within_between", "sigma", "loglik"), "",
      c(diff, se, 2 * pnorm(-abs(diff / se)), attr(VarCorr(m)$patient, "stddev"),
        as.numeric(logLik(m))))
}
cl <- clogit(new_syndesmophyte ~ mri + strata(patient), data = d, method = "exact")
add("clogit_exact", "estimate", "mri", unname(coef(cl)))
add("clogit_exact", "se", "mri", unname(sqrt(diag(vcov(cl)))))
add("clogit_exact", c("loglik", "loglik_null"), "", cl$loglik[2:1])
out <- do.call(rbind, rows)
out$value <- signif(out$value, 15)
write.csv(out, file.path(here, "within.csv"), row.names = FALSE)
cat(sprintf("R %s, lme4 %s, survival %s\n", getRversion(), packageVersion("lme4"),
            packageVersion("survival")))
