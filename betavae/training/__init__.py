"""One run's training: its folder, the loop, and the lifecycle pieces the single and the packed loop share."""
