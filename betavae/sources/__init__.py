"""Where images come from: dSprites' renderer and file, CelebA's folders."""
