"""Speed switches resolved per device, and the CPU kernels they plug into a network that matches them."""
