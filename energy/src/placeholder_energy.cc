namespace verdant {}
