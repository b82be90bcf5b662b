terraform {
  # Pure computation: no provider, so `terraform test` runs offline.
  required_version = ">= 1.9.0"
}
