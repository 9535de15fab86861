"""The float64 loop reference lives in the package (:mod:`verl_spro.estimator_reference`); tests import it here."""

from verl_spro.estimator_reference import spro_reference, spro_reference_sessions

__all__ = ["spro_reference", "spro_reference_sessions"]
