"""The DIL link layer: precedence queues, store-and-forward, custody, anti-entropy."""
