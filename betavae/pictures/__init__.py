"""Figures of a run or a sweep: reconstructions, traversals, factor pictures, log plots and HTML reports."""
