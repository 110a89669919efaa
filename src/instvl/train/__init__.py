"""InstAP pre-training and evaluation on InstVL shards."""
