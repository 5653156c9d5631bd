// placeholder, replaced as the module lands
namespace verdant {}
