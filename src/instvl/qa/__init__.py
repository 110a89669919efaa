"""Quality control: review routing, the Label Studio round trip and QC reports."""
