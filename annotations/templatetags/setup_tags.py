"""`form|field:"name"`: a bound field by name, so a template can lay fields out in groups."""

from django import template
from django.forms import BaseForm, BoundField

register = template.Library()


@register.filter
def field(form: BaseForm, name: str) -> BoundField:
    return form[name]
