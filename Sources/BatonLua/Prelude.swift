/// Lua run once in every fresh state, before the recipe: the sandbox rules.
/// - text chunks only: load/loadfile/dofile cannot load bytecode;
/// - no native modules: package.loadlib and the C searchers are removed;
/// - require looks next to the recipe, in ./scripts-lua, then in Baton's built-in library.
enum Prelude {
    static let source = #"""
    local rawload, select, type, io_open = load, select, type, io.open
    package.loadlib = nil
    package.cpath = ""
    for i = #package.searchers, 3, -1 do package.searchers[i] = nil end

    load = function(chunk, name, mode, ...)
      if mode ~= nil and type(mode) ~= "string" then error("bad argument #3 to 'load' (string expected)", 2) end
      if select("#", ...) > 0 then return rawload(chunk, name, "t", (...)) end
      return rawload(chunk, name, "t")
    end

    loadfile = function(filename, mode, ...)
      local text, err
      if filename == nil then
        text = io.read("a")
        filename = "stdin"
      else
        local f; f, err = io_open(filename, "rb")
        if not f then return nil, err end
        text = f:read("a"); f:close()
      end
      if text:sub(1, 1) == "#" then text = "--" .. text end
      if select("#", ...) > 0 then return rawload(text, "@" .. filename, "t", (...)) end
      return rawload(text, "@" .. filename, "t")
    end

    dofile = function(filename)
      local f = assert(loadfile(filename))
      return f()
    end
    """#
}
