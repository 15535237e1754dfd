"""`form|field:"name"`: a bound field by name, so a template can lay fields out in groups;
`share|percent`: a share as a percentage."""

from django import template
from django.forms import BaseForm, BoundField

register = template.Library()


@register.filter
def field(form: BaseForm, name: str) -> BoundField:
    return form[name]


@register.filter
def percent(share: float) -> str:
    """0.566 → "56.6 %", 0.5 → "50 %": one decimal, none where it is 0."""
    text = f"{100 * share:.1f}"
    return f"{text.removesuffix('.0')} %"
