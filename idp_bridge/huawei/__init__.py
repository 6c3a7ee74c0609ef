"""The Huawei Cloud partner profile: sites, the console login link, attributes, binding notices."""
